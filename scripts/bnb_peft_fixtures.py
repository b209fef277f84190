#!/usr/bin/env python3
"""Reference fixtures for medgrpo's NF4 (bitsandbytes) and LoRA (PEFT) code.

Run from the repository root with the project venv:

    /work/venv/bin/python scripts/bnb_peft_fixtures.py            # writes tests/fixtures/{nf4,lora}/
    /work/venv/bin/python scripts/bnb_peft_fixtures.py --check-rust-adapter tests/fixtures/lora/rust_adapter

The first form quantizes weights with `bitsandbytes.functional.quantize_4bit` on CPU (bitsandbytes
>= 0.45 runs NF4 on CPU) and wraps tiny Linear layers with PEFT; it writes the inputs, packed codes,
statistics, dequantized values, LoRA outputs and gradients as safetensors, plus an adapter saved by
PEFT. The second form loads an adapter written by medgrpo (Rust) into PEFT and checks that it
reproduces the LoRA outputs the Rust side recorded; its verdict is written next to the adapter.

Also prints the memory of MedGemma-4B-IT from its config (tests/fixtures/nf4/medgemma-4b-it/config.json):
bf16 footprint from transformers' `get_memory_footprint()` on a meta-device model, and the NF4
footprint counted over the modules transformers' bitsandbytes integration would quantize.
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file, load_file

import bitsandbytes as bnb
import bitsandbytes.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NF4_DIR = os.path.join(ROOT, "tests", "fixtures", "nf4")
LORA_DIR = os.path.join(ROOT, "tests", "fixtures", "lora")


def nf4_fixtures():
    g = torch.Generator().manual_seed(1234)
    out = {}

    # 13 x 37 = 481 values: 7 full blocks of 64 + a partial one of 33 (odd count, so the last byte
    # holds a padding nibble). Block 1 is all zeros; block 2 holds values exactly on the midpoints
    # between NF4 codes (absmax 1.0, so the scaled value is the midpoint itself: tie rule).
    w = torch.randn(13 * 37, generator=g, dtype=torch.float32) * 0.05
    w[64:128] = 0.0
    code = F.get_4bit_type("nf4", device="cpu")
    mids = (code[:-1] + code[1:]) / 2
    blk = torch.zeros(64)
    blk[0] = 1.0
    blk[1 : 1 + 15] = mids
    blk[16 : 16 + 15] = -mids.flip(0)
    blk[31:] = torch.linspace(-1.0, 1.0, 33)
    w[128:192] = blk
    w = w.reshape(13, 37)
    packed, st = F.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="nf4")
    deq = F.dequantize_4bit(packed, st, quant_type="nf4")
    out["small.weight"] = w
    out["small.packed"] = packed.reshape(-1).contiguous()
    out["small.absmax"] = st.absmax
    out["small.dequant"] = deq
    out["nf4_code"] = code

    # bf16 input, bf16 dequantization.
    wb = (torch.randn(9, 41, generator=g) * 0.02).to(torch.bfloat16)
    wb[1, :] = 0.0
    packed, st = F.quantize_4bit(wb, blocksize=64, compress_statistics=False, quant_type="nf4")
    out["bf16.weight"] = wb
    out["bf16.packed"] = packed.reshape(-1).contiguous()
    out["bf16.absmax"] = st.absmax
    out["bf16.dequant"] = F.dequantize_4bit(packed, st, quant_type="nf4")

    # Double quantization: 150 x 131 = 19650 values -> 308 blocks of 64 (last one partial) -> two
    # nested blocks of 256 (the second partial). Rows 10..12 zero so some absmax are 0.
    wd = torch.randn(150, 131, generator=g) * torch.linspace(0.01, 0.2, 150).unsqueeze(1)
    wd[10:13, :] = 0.0
    out["dynamic_map"] = F.create_dynamic_map().clone()
    packed, st = F.quantize_4bit(wd, blocksize=64, compress_statistics=True, quant_type="nf4")
    out["dq.weight"] = wd
    out["dq.packed"] = packed.reshape(-1).contiguous()
    out["dq.qabsmax"] = st.absmax
    out["dq.offset"] = st.offset.reshape(1).float()
    out["dq.nested_absmax"] = st.state2.absmax
    out["dq.nested_quant_map"] = st.state2.code
    out["dq.dequant"] = F.dequantize_4bit(packed, st, quant_type="nf4")
    # The absmax bitsandbytes recovers from the nested statistics (what dequantize uses).
    out["dq.absmax_restored"] = F.dequantize_blockwise(st.absmax, st.state2) + st.offset
    # The raw (un-nested) absmax for the same weight.
    _, st_plain = F.quantize_4bit(wd, blocksize=64, compress_statistics=False, quant_type="nf4")
    out["dq.absmax_plain"] = st_plain.absmax
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(NF4_DIR, "nf4_ref.safetensors"))

    # A checkpoint entry as bitsandbytes serialises a Linear4bit weight (pre-quantized models).
    qs = st.as_dict(packed=True)
    ckpt = {"layer.weight": packed.contiguous()}
    for k, v in qs.items():
        ckpt["layer.weight." + k] = v.contiguous()
    save_file(ckpt, os.path.join(NF4_DIR, "bnb_prequantized.safetensors"))
    print("nf4:", {k: tuple(v.shape) for k, v in out.items()})
    print("prequantized keys:", sorted(ckpt))


# ---------------------------------------------------------------------------------------------
# LoRA: a tiny module tree whose names are the Gemma 3 (transformers >= 4.52) names, so PEFT's
# saved keys are exactly the real ones.

DIMS = {  # name -> (in, out)
    "q_proj": (24, 16),
    "k_proj": (24, 8),
    "v_proj": (24, 8),
    "o_proj": (16, 24),
    "gate_proj": (24, 40),
    "up_proj": (24, 40),
    "down_proj": (40, 24),
}


class Attn(nn.Module):
    def __init__(self, bias=False):
        super().__init__()
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            i, o = DIMS[n]
            setattr(self, n, nn.Linear(i, o, bias=bias))


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        for n in ("gate_proj", "up_proj", "down_proj"):
            i, o = DIMS[n]
            setattr(self, n, nn.Linear(i, o, bias=False))


class Layer(nn.Module):
    def __init__(self, bias=False):
        super().__init__()
        self.self_attn = Attn(bias)
        self.mlp = Mlp()


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Layer(), Layer()])


class VisionEnc(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Layer(bias=True)])


class Vision(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = VisionEnc()


class VisionTower(nn.Module):
    def __init__(self):
        super().__init__()
        self.vision_model = Vision()


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.language_model = LM()
        self.vision_tower = VisionTower()


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = Inner()

    def forward(self, x):
        return x


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VISION_EXCLUDE = r".*vision_tower.*"


def lora_linear_names(peft_model):
    from peft.tuners.lora import LoraLayer

    return sorted(
        n[len("base_model.model.") :] for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)
    )


def run_case(peft_model, names, g, tag, tensors, outputs_only=False):
    """Feeds every LoRA module its own input; loss = sum over modules of <y, R>."""
    loss = 0.0
    for name in names:
        mod = peft_model.base_model.model.get_submodule(name)
        i, o = mod.in_features, mod.out_features
        x = torch.randn(5, i, generator=g)
        r = torch.randn(5, o, generator=g)
        y = mod(x)
        loss = loss + (y * r).sum()
        tensors[f"{tag}.{name}.x"] = x
        tensors[f"{tag}.{name}.r"] = r
        tensors[f"{tag}.{name}.y"] = y.detach().clone()
    if outputs_only:
        return
    loss.backward()
    for name in names:
        mod = peft_model.base_model.model.get_submodule(name)
        tensors[f"{tag}.{name}.grad_A"] = mod.lora_A["default"].weight.grad.clone()
        tensors[f"{tag}.{name}.grad_B"] = mod.lora_B["default"].weight.grad.clone()


def lora_fixtures():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(7)
    g = torch.Generator().manual_seed(99)
    base = Tiny()
    tensors = {}
    for n, p in base.named_parameters():
        tensors["base." + n] = p.detach().clone()
    all_linear = sorted(n for n, m in base.named_modules() if isinstance(m, nn.Linear))

    cases = {
        "plain": dict(r=4, lora_alpha=8, use_rslora=False, exclude_modules=VISION_EXCLUDE),
        "rslora": dict(r=4, lora_alpha=8, use_rslora=True, exclude_modules=VISION_EXCLUDE),
        "vision": dict(r=2, lora_alpha=16, use_rslora=False, exclude_modules=None),
    }
    targets_json = {"all_linear": all_linear}
    for tag, kw in cases.items():
        model = Tiny()
        model.load_state_dict(base.state_dict())
        cfg = LoraConfig(target_modules=TARGETS, lora_dropout=0.1, bias="none", **kw)
        pm = get_peft_model(model, cfg)
        pm.eval()  # dropout off: PEFT's dropout draws from torch's RNG, not reproducible elsewhere
        names = lora_linear_names(pm)
        targets_json[tag] = names
        # PEFT's init: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0.
        # Record the max |A| * sqrt(in) (must be <= 1) and that B is zero, then make B non-zero.
        for name in names:
            mod = pm.base_model.model.get_submodule(name)
            a = mod.lora_A["default"].weight
            assert float(a.detach().abs().max()) * math.sqrt(mod.in_features) <= 1.0
            assert float(mod.lora_B["default"].weight.detach().abs().max()) == 0.0
            with torch.no_grad():
                mod.lora_B["default"].weight.normal_(0.0, 0.1, generator=g)
                tensors[f"{tag}.{name}.lora_A"] = a.detach().clone()
                tensors[f"{tag}.{name}.lora_B"] = mod.lora_B["default"].weight.detach().clone()
        run_case(pm, names, g, tag, tensors)
        if tag == "plain":
            pm.save_pretrained(os.path.join(LORA_DIR, "peft_adapter"))

    # LoRA on an NF4 base: bitsandbytes Linear4bit (double quant) under PEFT, on CPU.
    model = Tiny()
    model.load_state_dict(base.state_dict())
    lin = model.model.language_model.layers[0].self_attn.q_proj
    l4 = bnb.nn.Linear4bit(
        lin.in_features, lin.out_features, bias=False, compute_dtype=torch.float32,
        compress_statistics=True, quant_type="nf4",
    )
    l4.weight = bnb.nn.Params4bit(lin.weight.detach().clone(), requires_grad=False, quant_type="nf4",
                                  compress_statistics=True, blocksize=64)
    l4 = l4.to("cpu")
    assert l4.weight.bnb_quantized, "bitsandbytes did not quantize on CPU"
    # Keep bitsandbytes on its exact dequantize-then-matmul path in f32 (its AVX512-bf16 CPU
    # kernel would repack the weight and compute in bf16).
    l4.support_avx512bf16_for_cpu = False
    model.model.language_model.layers[0].self_attn.q_proj = l4
    cfg = LoraConfig(target_modules=["q_proj"], r=4, lora_alpha=8, lora_dropout=0.0,
                     exclude_modules=VISION_EXCLUDE)
    pm = get_peft_model(model, cfg)
    pm.eval()
    names = lora_linear_names(pm)
    # layer 0's q_proj has the NF4 base, layer 1's stays dense.
    assert names == [f"model.language_model.layers.{i}.self_attn.q_proj" for i in (0, 1)], names
    assert isinstance(pm.base_model.model.get_submodule(names[0]).get_base_layer(), bnb.nn.Linear4bit)
    for name in names:
        mod = pm.base_model.model.get_submodule(name)
        with torch.no_grad():
            mod.lora_B["default"].weight.normal_(0.0, 0.1, generator=g)
        tensors[f"nf4.{name}.lora_A"] = mod.lora_A["default"].weight.detach().clone()
        tensors[f"nf4.{name}.lora_B"] = mod.lora_B["default"].weight.detach().clone()
    run_case(pm, names, g, "nf4", tensors)
    targets_json["nf4"] = names

    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(LORA_DIR, "lora_ref.safetensors"))
    with open(os.path.join(LORA_DIR, "targets.json"), "w") as f:
        json.dump(targets_json, f, indent=1)
    print("lora: wrote", len(tensors), "tensors; targets", {k: len(v) for k, v in targets_json.items()})


def check_rust_adapter(adapter_dir):
    """Loads an adapter written by medgrpo into PEFT and checks it reproduces the outputs that the
    Rust test recorded next to it (rust_outputs.safetensors: x and y per module)."""
    from peft import PeftModel

    ref = load_file(os.path.join(LORA_DIR, "lora_ref.safetensors"))
    model = Tiny()
    model.load_state_dict({k[len("base."):]: v for k, v in ref.items() if k.startswith("base.")})
    pm = PeftModel.from_pretrained(model, adapter_dir)
    pm.eval()
    names = lora_linear_names(pm)
    rust = load_file(os.path.join(adapter_dir, "..", "rust_outputs.safetensors"))
    worst = 0.0
    with torch.no_grad():
        for name in names:
            mod = pm.base_model.model.get_submodule(name)
            y = mod(rust[f"{name}.x"])
            worst = max(worst, float((y - rust[f"{name}.y"]).abs().max()))
    ok = worst < 1e-4 and len(names) == len({k.rsplit('.', 1)[0] for k in rust if k.endswith('.y')})
    verdict = {"modules": names, "max_abs_diff": worst, "ok": ok,
               "peft_scaling": {n: pm.base_model.model.get_submodule(n).scaling["default"] for n in names}}
    with open(os.path.join(adapter_dir, "..", "peft_check.json"), "w") as f:
        json.dump(verdict, f, indent=1)
    print(json.dumps(verdict, indent=1))
    if not ok:
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
# Memory of MedGemma-4B-IT from its config alone.

def medgemma_memory():
    from transformers import AutoConfig, AutoModelForImageTextToText

    cfg_dir = os.path.join(NF4_DIR, "medgemma-4b-it")
    config = AutoConfig.from_pretrained(cfg_dir)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    comp = {}

    def component(name):
        if ".language_model." in f".{name}" or name.startswith("model.language_model"):
            return "language_model"
        if "vision_tower" in name:
            return "vision_tower"
        if "multi_modal_projector" in name:
            return "projector"
        if name.startswith("lm_head"):
            return "lm_head"
        return "other"

    seen = set()
    for mname, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if id(p) in seen:
                continue  # tied lm_head
            seen.add(id(p))
            c = comp.setdefault(component(mname), {"params": 0, "linear_params": 0, "bf16": 0, "nf4": 0, "nf4_dq": 0})
            n = p.numel()
            c["params"] += n
            c["bf16"] += 2 * n
            if isinstance(m, nn.Linear) and pname == "weight":
                c["linear_params"] += n
                blocks = math.ceil(n / 64)
                packed = (n + 1) // 2
                c["nf4"] += packed + 4 * blocks
                nested = math.ceil(blocks / 256)
                c["nf4_dq"] += packed + blocks + 4 * nested + 4 * 256 + 4
            else:
                c["nf4"] += 2 * n
                c["nf4_dq"] += 2 * n
    # What bitsandbytes itself holds for one MedGemma q_proj-sized weight, double-quantized:
    # packed codes + u8 absmax + nested f32 absmax + 256-entry map + offset.
    wq = torch.randn(2048, 2560, generator=torch.Generator().manual_seed(5)) * 0.02
    pk, st = F.quantize_4bit(wq, blocksize=64, compress_statistics=True, quant_type="nf4")
    bnb_bytes = (pk.numel() * pk.element_size() + st.absmax.numel() * st.absmax.element_size()
                 + st.state2.absmax.numel() * 4 + st.state2.code.numel() * 4 + 4)
    pk, st = F.quantize_4bit(wq, blocksize=64, compress_statistics=False, quant_type="nf4")
    bnb_plain = pk.numel() * pk.element_size() + st.absmax.numel() * st.absmax.element_size()
    print("bnb bytes of a [2048, 2560] weight: dq", bnb_bytes, "plain", bnb_plain)
    print("medgemma-4b-it get_memory_footprint (bf16, meta):", model.get_memory_footprint())
    print(json.dumps(comp, indent=1))
    with open(os.path.join(NF4_DIR, "medgemma-4b-it", "memory_ref.json"), "w") as f:
        json.dump({"get_memory_footprint_bf16": model.get_memory_footprint(), "components": comp,
                   "bnb_2048x2560_bytes": {"double_quant": bnb_bytes, "plain": bnb_plain}}, f, indent=1)


def tiny_gemma3_peft():
    """The tiny Gemma 3 (tests/fixtures/tiny-gemma3) with a PEFT adapter whose B is non-zero:
    completion log-probs of the reference text prompt, dense and with a bitsandbytes NF4
    (double quant) base, TRL's way (logits / T, log_softmax, gather)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    tiny = os.path.join(ROOT, "tests", "fixtures", "tiny-gemma3")
    ref = json.load(open(os.path.join(tiny, "reference.json")))
    temp = ref["temperature"]
    prompt = ref["text_prompt"]
    comps = ref["text_completions"]

    def logprobs(model):
        out = []
        with torch.no_grad():
            for c in comps:
                ids = torch.tensor([prompt + c])
                logits = model(input_ids=ids).logits[0].float()
                rows = logits[len(prompt) - 1 : len(prompt) - 1 + len(c)] / temp
                lp = torch.log_softmax(rows, dim=-1)
                out.append(lp.gather(1, torch.tensor(c)[:, None])[:, 0].tolist())
        return out

    torch.manual_seed(11)
    model = AutoModelForImageTextToText.from_pretrained(tiny, dtype=torch.float32)
    base_lp = logprobs(model)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS,
                     exclude_modules=VISION_EXCLUDE)
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.05, generator=g)
    pm.eval()
    dense_lp = logprobs(pm)
    adir = os.path.join(LORA_DIR, "tiny_gemma3_adapter")
    pm.save_pretrained(adir)
    readme = os.path.join(adir, "README.md")
    if os.path.exists(readme):
        os.remove(readme)

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    qm = AutoModelForImageTextToText.from_pretrained(tiny, dtype=torch.float32, quantization_config=q,
                                                     device_map="cpu")
    n4 = 0
    for m in qm.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False  # exact f32 dequantize + matmul path
            n4 += 1
    qpm = PeftModel.from_pretrained(qm, adir)
    qpm.eval()
    nf4_lp = logprobs(qpm)
    out = {"temperature": temp, "prompt": prompt, "completions": comps, "base": base_lp,
           "lora_dense": dense_lp, "lora_nf4": nf4_lp, "linear4bit_layers": n4,
           "lora_layers": len(lora_linear_names(pm))}
    with open(os.path.join(LORA_DIR, "tiny_gemma3_peft.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("tiny gemma3: Linear4bit", n4, "LoRA layers", out["lora_layers"],
          "max |dense - nf4| lp", max(abs(a - b) for x, y in zip(dense_lp, nf4_lp) for a, b in zip(x, y)),
          "max |base - lora| lp", max(abs(a - b) for x, y in zip(base_lp, dense_lp) for a, b in zip(x, y)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-rust-adapter")
    args = ap.parse_args()
    if args.check_rust_adapter:
        check_rust_adapter(args.check_rust_adapter)
        return
    os.makedirs(NF4_DIR, exist_ok=True)
    os.makedirs(LORA_DIR, exist_ok=True)
    print("bitsandbytes", bnb.__version__)
    if os.environ.get("ONLY_MEMORY"):
        medgemma_memory()
        return
    if os.environ.get("ONLY_TINY"):
        tiny_gemma3_peft()
        return
    nf4_fixtures()
    lora_fixtures()
    tiny_gemma3_peft()
    medgemma_memory()


if __name__ == "__main__":
    main()

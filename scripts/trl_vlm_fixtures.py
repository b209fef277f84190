#!/usr/bin/env python
"""TRL 1.16 reference numbers for `medgrpo loss` (and so the learner) on the tiny Gemma 3 VLM with a PEFT adapter.

Run:  /work/venv/bin/python scripts/trl_vlm_fixtures.py   (CPU, under a minute)
Writes tests/fixtures/grpo-vlm/:
  image.png                      a seeded synthetic 32x32 RGB image (the tower's input size: no resize)
  adapter/                       the PEFT LoRA adapter (r 4, alpha 8, q/k/v/o/gate/up/down of the text decoder,
                                 NON-ZERO seeded B), exactly the weights the trainer used
  <case>.json                    the `medgrpo loss --group` input (one group: prompt ids, image, completion ids,
                                 rewards, optional old log-probs, the loss settings) plus `expected`: TRL's
                                 advantages, per-token log-probs / entropies / reference log-probs, loss, metrics
  <case>.grads.safetensors       d(loss)/d(LoRA weights) under PEFT's saved key names
                                 (`base_model.model.model.language_model.layers.N.self_attn.q_proj.lora_A.weight`)

How: a real `GRPOTrainer` (tiny-gemma3 = Gemma3ForConditionalGeneration, f32, CPU, `peft_config` so TRL wraps it
with PEFT itself and its reference model is the same model with adapters disabled), whose fresh adapter is then
overwritten with seeded non-zero weights. The group is built from explicit ids — the processor's own expansion of
`<bos><start_of_turn>user\n<start_of_image>...` — not re-tokenised by TRL, so the image block sits exactly where the
processor put it (TRL's re-tokenisation can shift it by one when the template already starts with <bos>). Then
TRL's own code: the reference log-probs as `_generate_and_score_completions` computes them (`use_adapter(model,
None)` + `_get_per_token_logps_and_entropies` with pixel_values and token_type_ids), and `_compute_loss` on the
batch (one micro-batch = the group), whose backward gives the LoRA gradients. Advantages follow TRL's formula
(group mean, Bessel std, + 1e-4), as `_generate_and_score_completions` does.
"""

import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODEL = os.path.join(ROOT, "tests", "fixtures", "tiny-gemma3")
OUT = os.path.join(ROOT, "tests", "fixtures", "grpo-vlm")

G = 4  # num_generations = per_device_train_batch_size: one group per step, one micro-batch
T = 7  # max_completion_length
LENGTHS = [7, 4, 6, 2]  # completion lengths: one truncated at T, the others end on an eos id
REWARDS = [1.2, 0.1, 0.7, 0.0]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# name, loss_type, beta, off_policy (old log-probs perturbed: clipping active), bias-corrected kl, temperature,
# epsilon, epsilon_high
CASES = [
    ("dapo_onpolicy", "dapo", 0.0, False, True, 1.0, 0.2, None),
    ("grpo_onpolicy", "grpo", 0.0, False, True, 1.0, 0.2, None),
    ("bnpo_onpolicy", "bnpo", 0.0, False, True, 0.9, 0.2, None),
    ("dr_grpo_onpolicy", "dr_grpo", 0.0, False, True, 0.9, 0.2, None),
    ("dapo_clip", "dapo", 0.0, True, True, 0.9, 0.2, 0.28),
    ("grpo_clip", "grpo", 0.0, True, True, 1.0, 0.2, None),
    ("dapo_beta_biascorr", "dapo", 0.1, True, True, 0.9, 0.2, None),
    ("dapo_beta_nobiascorr", "dapo", 0.1, True, False, 0.9, 0.2, None),
    ("grpo_onpolicy_beta", "grpo", 0.04, False, True, 1.0, 0.2, None),
    # equal rewards: zero advantages, only the KL term has a gradient (the learner must not skip the group)
    ("dapo_beta_zero_spread", "dapo", 0.1, False, True, 1.0, 0.2, None),
]
ZERO_SPREAD_REWARDS = [0.5, 0.5, 0.5, 0.5]
# QLoRA: the same model loaded by transformers' bitsandbytes integration (NF4, double quant, every Linear of both
# towers), i.e. what `medgrpo loss --quant nf4 --double-quant` and the learner with `load_in_4bit` run. Text-only
# prompt: bitsandbytes 0.50.2's CPU `quantize_4bit` is wrong for weights whose rows are shorter than the block
# size (the tiny SigLIP's 32-wide layers: a random [32, 32] comes back with errors of 0.16 for values up to 0.38,
# while [64, 64] and [32, 64] are fine), so its quantized vision tower is no reference here.
NF4_CASES = {"dapo_clip_beta_nf4"}
CASES.append(("dapo_clip_beta_nf4", "dapo", 0.04, True, True, 0.9, 0.2, None))


def make_image():
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:32, 0:32]
    base = np.stack([x * 7, y * 6, (x + y) * 3], -1).astype(np.float64)
    img = np.clip(base + rng.integers(0, 60, (32, 32, 3)), 0, 255).astype(np.uint8)
    path = os.path.join(OUT, "image.png")
    Image.fromarray(img, "RGB").save(path)
    return path, img


def make_prompt(image_path, img):
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(MODEL)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "Where is the opacity?"}],
        }
    ]
    text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # the rendered template already starts with <bos>: no second one
    enc = proc(
        text=[text], images=[[Image.open(image_path).convert("RGB")]], return_tensors="pt", add_special_tokens=False
    )
    ids = enc["input_ids"][0]
    assert (ids == 2).sum() == 1, "exactly one <bos>: the image block is where the processor put it"
    pixel_values = enc["pixel_values"].float()
    # 32x32 in, 32x32 out: the processor only rescales and normalizes (no resampling to disagree on)
    direct = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    direct = ((direct - 0.5) / 0.5)[None]
    assert torch.allclose(pixel_values, direct, atol=1e-6), (pixel_values - direct).abs().max()
    return proc, ids, pixel_values


def make_trainer(case, proc):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import Gemma3ForConditionalGeneration
    from trl import GRPOConfig, GRPOTrainer

    name, lt, beta, off, bc, temp, eps, eps_hi = case
    args = GRPOConfig(
        output_dir="/tmp/trl_vlm_fixtures",
        use_cpu=True,
        bf16=False,
        report_to=[],
        per_device_train_batch_size=G,
        gradient_accumulation_steps=1,
        num_generations=G,
        max_completion_length=T,
        loss_type=lt,
        beta=beta,
        epsilon=eps,
        epsilon_high=eps_hi,
        use_bias_correction_kl=bc,
        temperature=temp,
        logging_steps=1,
        seed=0,
    )
    nf4 = name in NF4_CASES
    if nf4:
        import bitsandbytes as bnb
        from transformers import BitsAndBytesConfig

        q = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
        model = Gemma3ForConditionalGeneration.from_pretrained(
            MODEL, dtype=torch.float32, quantization_config=q, device_map="cpu"
        )
        n4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert len(n4) == 54, len(n4)
        for m in n4:
            # bitsandbytes' exact dequantize-then-matmul path in f32 (its AVX512-bf16 CPU kernel computes in bf16)
            m.support_avx512bf16_for_cpu = False
    else:
        model = Gemma3ForConditionalGeneration.from_pretrained(MODEL, dtype=torch.float32)
    peft_config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=TARGETS,
        exclude_modules=".*vision_tower.*",
    )
    ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": "x"}]] * G})
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=ds,
        processing_class=proc,
        peft_config=peft_config,
    )
    # non-zero B (and a seeded A): the adapter changes the outputs, so a wrong gradient path shows. With a
    # quantized base TRL casts the adapter to bf16 (QLoRA paper); medgrpo keeps it in f32, so it goes back to f32
    # here: the check is of the NF4 base and the maths, at f32 precision.
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for pname, p in trainer.model.named_parameters():
            if (".lora_A." in pname or ".lora_B." in pname) and p.dtype != torch.float32:
                p.data = p.data.float()
            if ".lora_A." in pname:
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / p.shape[1] ** 0.5)
            elif ".lora_B." in pname:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    trainer.model.train()
    return trainer


def lora_params(trainer):
    """(PEFT saved key name, parameter) of every LoRA weight."""
    out = []
    for pname, p in trainer.model.named_parameters():
        if ".lora_A." in pname or ".lora_B." in pname:
            out.append((pname.replace(".default.", "."), p))
    assert out and all(k.startswith("base_model.model.model.language_model.") for k, _ in out), out[:2]
    return out


def run_case(case, proc, prompt_ids, text_prompt_ids, pixel_values, image_token_id):
    from trl.trainer.utils import use_adapter

    name, lt, beta, off, bc, temp, eps, eps_hi = case
    trainer = make_trainer(case, proc)
    seed = 1000 + [c[0] for c in CASES].index(name)
    g = torch.Generator().manual_seed(99)  # same completions for every case
    completion_ids = torch.randint(10, 512, (G, T), generator=g)
    completion_mask = torch.zeros(G, T, dtype=torch.long)
    for i, L in enumerate(LENGTHS):
        completion_mask[i, :L] = 1
        if L < T:
            completion_ids[i, L - 1] = [1, 6][i % 2]  # eos ids of generation_config.json
        completion_ids[i, L:] = 0  # pad
    if name in NF4_CASES:
        prompt_ids = text_prompt_ids
        pixel_values = None
    P = prompt_ids.numel()
    prompt = prompt_ids[None].repeat(G, 1)
    prompt_mask = torch.ones(G, P, dtype=torch.long)
    input_ids = torch.cat([prompt, completion_ids], 1)
    attention_mask = torch.cat([prompt_mask, completion_mask], 1)
    token_type_ids = (input_ids == image_token_id).long()
    pixels = pixel_values.repeat(G, 1, 1, 1) if pixel_values is not None else None
    mm = dict(pixel_values=pixels, num_images=[1] * G, token_type_ids=token_type_ids)
    if pixel_values is None:
        mm = {}

    # TRL's advantages (scale_rewards "group"): (r - mean) / (std + 1e-4), Bessel std
    rewards = ZERO_SPREAD_REWARDS if name.endswith("zero_spread") else REWARDS
    r = torch.tensor(rewards, dtype=torch.float32)
    advantages = (r - r.mean()) / (r.std() + 1e-4)

    with torch.no_grad():
        cur, cur_ent, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, attention_mask, T, compute_entropy=True, **mm
        )
    old = None
    if off:
        gg = torch.Generator().manual_seed(seed)
        old = cur + (torch.rand(G, T, generator=gg) - 0.5) * 0.8
        old = torch.where(completion_mask.bool(), old, torch.zeros_like(old))
    ref = None
    if beta != 0.0:
        # exactly `_generate_and_score_completions`'s PEFT branch (no "ref" adapter: fresh adapter from peft_config)
        model = trainer.accelerator.unwrap_model(trainer.model)
        assert "ref" not in model.peft_config
        with torch.no_grad(), use_adapter(model, adapter_name=None):
            ref, _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.model, input_ids, attention_mask, T, **mm
            )
        assert (ref - cur).abs().max() > 1e-2, "the adapter must matter for the KL term"

    inputs = {
        "prompt_ids": prompt,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": advantages,
        "num_items_in_batch": completion_mask.sum(),
        **mm,
    }
    if old is not None:
        inputs["old_per_token_logps"] = old
    if ref is not None:
        inputs["ref_per_token_logps"] = ref
    trainer._metrics["train"].clear()
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    metrics = {
        m: v[0]
        for m, v in trainer._metrics["train"].items()
        if m in ("kl", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean")
    }
    grads = {k: p.grad.detach().clone().contiguous() for k, p in lora_params(trainer)}
    assert sum(float(v.abs().sum()) for k, v in grads.items() if ".lora_A." in k) > 0, "A gets a gradient"
    save_file(grads, os.path.join(OUT, f"{name}.grads.safetensors"), metadata={"format": "pt"})
    if name == CASES[0][0]:
        adir = os.path.join(OUT, "adapter")
        trainer.model.save_pretrained(adir)
        os.remove(os.path.join(adir, "README.md"))  # PEFT's model card: not needed
        with open(os.path.join(adir, "adapter_config.json")) as f:
            acfg = json.load(f)
        acfg["base_model_name_or_path"] = "tests/fixtures/tiny-gemma3"  # not this machine's absolute path
        acfg["target_modules"] = sorted(acfg["target_modules"])  # a set in PEFT: stable file contents
        with open(os.path.join(adir, "adapter_config.json"), "w") as f:
            json.dump(acfg, f, indent=2, sort_keys=True)

    def rows(t):
        return [t[i, :L].tolist() for i, L in enumerate(LENGTHS)]

    comp = [completion_ids[i, :L].tolist() for i, L in enumerate(LENGTHS)]
    group = {"prompt_ids": prompt_ids.tolist(), "image": "image.png" if pixel_values is not None else None, "completion_ids": comp, "rewards": rewards}
    if old is not None:
        group["old_logps"] = rows(old)
    doc = {
        "training": {
            "loss_type": lt,
            "beta": beta,
            "epsilon": eps,
            "epsilon_high": eps_hi,
            "use_bias_correction_kl": bc,
            "importance_sampling_level": "token",
            "temperature": temp,
            "scale_rewards": "group",
            "per_device_train_batch_size": G,
            "gradient_accumulation_steps": 1,
            "num_generations": G,
            "max_completion_length": T,
        },
        "groups": [group],
        "expected": {
            "trl_version": __import__("trl").__version__,
            "loss": loss.item(),
            "advantages": advantages.tolist(),
            "logps": rows(cur),
            "entropy": rows(cur_ent),
            "ref_logps": rows(ref) if ref is not None else None,
            "metrics": metrics,
            "grads": f"{name}.grads.safetensors",
            "quant": {"nf4": name in NF4_CASES, "double_quant": name in NF4_CASES},
        },
    }
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print(f"{name:24s} loss={loss.item():+.6f} metrics={ {k: round(v, 4) for k, v in metrics.items()} }")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    image_path, img = make_image()
    proc, prompt_ids, pixel_values = make_prompt(image_path, img)
    image_token_id = proc.tokenizer.convert_tokens_to_ids("<image_soft_token>")
    assert (prompt_ids == image_token_id).sum() == 16
    messages = [{"role": "user", "content": [{"type": "text", "text": "Where is the opacity?"}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    text_prompt_ids = proc.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    assert (text_prompt_ids == 2).sum() == 1 and (text_prompt_ids == image_token_id).sum() == 0
    for case in CASES:
        run_case(case, proc, prompt_ids, text_prompt_ids, pixel_values, image_token_id)


if __name__ == "__main__":
    main()

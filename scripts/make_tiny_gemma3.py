#!/usr/bin/env python3
"""Builds the tiny random Gemma 3 fixtures and records transformers' outputs for the Rust parity tests.

Run from the repository root with the project venv (transformers 5.x, torch, CPU):

    /work/venv/bin/python scripts/make_tiny_gemma3.py

Writes (a few hundred KB in total):
  tests/fixtures/tiny-gemma3/        Gemma3ForConditionalGeneration snapshot (config.json,
                                     generation_config.json, model.safetensors) + reference.json
                                     + reference.safetensors
  tests/fixtures/tiny-gemma3-text/   Gemma3ForCausalLM snapshot whose config.json is rewritten in the
                                     transformers 4.x key style (rope_theta, rope_local_base_freq,
                                     rope_scaling, sliding_window_pattern) and reloaded to prove it is
                                     equivalent, with attention and final logit softcaps set so the
                                     Rust softcap code is exercised; + its reference files.

The tokenizer files of the same directories are written by scripts/make_tiny_tokenizer.py (another
script); this one only touches the model files and the reference outputs.

The configuration exercises everything DESIGN.md section 4 lists: 6 text layers with a sliding
window (8) shorter than the prompts and 2 global layers (pattern 3), linear RoPE scaling (factor 8)
on global layers, rope_local_base_freq != rope_theta, query_pre_attn_scalar != head_dim, GQA (4 query
heads, 2 KV heads), a 2-layer SigLIP tower (32x32 image, patch 4 -> 64 patches) pooled by the
projector to 16 tokens per image, and bidirectional attention inside the image block.

Every parameter is drawn from a seeded normal (norm weights and the projector included, which
transformers would initialise to zero) so that each code path changes the numbers.
"""

import json
import os

import torch
from safetensors.torch import save_file
from transformers import (
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    GenerationConfig,
    SiglipVisionConfig,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_VLM = os.path.join(ROOT, "tests", "fixtures", "tiny-gemma3")
OUT_TEXT = os.path.join(ROOT, "tests", "fixtures", "tiny-gemma3-text")

VOCAB = 512
PAD, EOS, BOS, UNK = 0, 1, 2, 3
START_OF_TURN, END_OF_TURN = 5, 6
BOI, EOI, IMAGE = 7, 8, 9
MM_TOKENS = 16
TEMPERATURE = 0.7
MAX_NEW = 20

torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)


def text_config(**extra):
    return Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=24,
        sliding_window=8,
        sliding_window_pattern=3,
        max_position_embeddings=512,
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        rms_norm_eps=1e-6,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=[EOS, END_OF_TURN],
        attn_implementation="eager",
        **extra,
    )


def randomize(model, seed):
    """Every parameter from a seeded normal (std 0.15; norms, biases and positions 0.1)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        std, mean = 0.15, 0.0
        if "norm" in name or name.endswith("bias") or "position_embedding" in name:
            std = 0.1
        if "embed_tokens" in name:
            # Small token embeddings so the layers, not the residual copy of the input token,
            # decide the next token (otherwise greedy decoding just repeats its input).
            std = 0.03
        if "feedforward_layernorm" in name or "post_attention_layernorm" in name:
            mean = 0.5
        p.copy_(torch.randn(p.shape, generator=g) * std + mean)


def generation_config():
    return GenerationConfig(
        bos_token_id=BOS,
        eos_token_id=[EOS, END_OF_TURN],
        pad_token_id=PAD,
        do_sample=True,
        top_k=64,
        top_p=0.95,
    )


def completion_logprobs(model, prompt, completion, temperature, **kw):
    """TRL's way: logits of prompt+completion, the last len(completion) rows before each token,
    divided by the temperature, log_softmax, gathered at the completion ids."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids, **kw).logits[0]
    rows = logits[len(prompt) - 1 : len(prompt) - 1 + len(completion)] / temperature
    lp = torch.log_softmax(rows.float(), dim=-1)
    return lp.gather(1, torch.tensor(completion)[:, None])[:, 0].tolist()


def greedy_no_cache(model, prompt, steps, **kw):
    """Greedy decoding recomputing the whole sequence each step (the no-KV-cache ground truth)."""
    seq = list(prompt)
    out = []
    for _ in range(steps):
        ids = torch.tensor([seq])
        extra = dict(kw)
        if "token_type_ids" in kw:
            tt = kw["token_type_ids"][0].tolist()
            extra["token_type_ids"] = torch.tensor([tt + [0] * (len(seq) - len(tt))])
        logits = model(input_ids=ids, use_cache=False, **extra).logits[0, -1]
        nxt = int(logits.argmax())
        out.append(nxt)
        seq.append(nxt)
        if nxt in (EOS, END_OF_TURN):
            break
    return out


def min_top2_margin(model, prompt, tokens, **kw):
    """Smallest gap between the best and second-best logit along a greedy path (ties would make
    greedy parity fragile)."""
    seq = list(prompt) + list(tokens)
    ids = torch.tensor([seq])
    logits = model(input_ids=ids, **kw).logits[0, len(prompt) - 1 : len(seq) - 1]
    top2 = logits.topk(2, dim=-1).values
    return float((top2[:, 0] - top2[:, 1]).min())


def hf_generate(model, prompt, use_cache, **kw):
    ids = torch.tensor([prompt])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=MAX_NEW,
        use_cache=use_cache,
        eos_token_id=[EOS, END_OF_TURN],
        pad_token_id=PAD,
        top_k=None,
        top_p=None,
        **kw,
    )
    return out[0, len(prompt) :].tolist()


def sampling_reference(rng):
    """Sampling distributions after transformers' warpers (temperature, top-k, top-p, min-p, in
    generate's order) for one random logits row, so the Rust sampler is checked against them."""
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    logits = torch.randn((1, 64), generator=rng) * 2.0
    cases = []
    for t, k, p, mp in [(0.7, 10, 1.0, 0.0), (1.0, 0, 0.9, 0.0), (0.7, 20, 0.8, 0.05), (1.3, 0, 1.0, 0.1), (1.0, 64, 0.95, 0.0)]:
        scores = TemperatureLogitsWarper(t)(None, logits.clone())
        if k:
            scores = TopKLogitsWarper(k)(None, scores)
        if p < 1.0:
            scores = TopPLogitsWarper(p)(None, scores)
        if mp > 0.0:
            scores = MinPLogitsWarper(mp)(None, scores)
        probs = torch.softmax(scores, dim=-1)[0]
        cases.append({"temperature": t, "top_k": k, "top_p": p, "min_p": mp, "probs": probs.tolist()})
    with open(os.path.join(OUT_VLM, "sampling_reference.json"), "w") as f:
        json.dump({"logits": logits[0].tolist(), "cases": cases}, f)


def main():
    rng = torch.Generator().manual_seed(1234)

    def text_ids(n):
        return torch.randint(10, VOCAB, (n,), generator=rng).tolist()

    # ---------------- vision-language model ----------------
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=4,
        layer_norm_eps=1e-6,
        vision_use_head=False,
    )
    cfg = Gemma3Config(
        text_config=text_config(),
        vision_config=vision,
        mm_tokens_per_image=MM_TOKENS,
        boi_token_index=BOI,
        eoi_token_index=EOI,
        image_token_index=IMAGE,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=[EOS, END_OF_TURN],
    )
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(cfg).eval().float()
    model.config._attn_implementation = "eager"
    randomize(model, 42)
    os.makedirs(OUT_VLM, exist_ok=True)
    model.save_pretrained(OUT_VLM, safe_serialization=True)
    generation_config().save_pretrained(OUT_VLM)

    # Image prompt: bos, text, "\n\n"-like ids, boi, 16 image tokens, eoi, text: 36 tokens > window 8.
    image_prompt = [BOS, START_OF_TURN] + text_ids(6) + [BOI] + [IMAGE] * MM_TOKENS + [EOI] + text_ids(8) + [END_OF_TURN, START_OF_TURN]
    token_type = [1 if t == IMAGE else 0 for t in image_prompt]
    pixels = (torch.rand((1, 3, 32, 32), generator=rng) * 2 - 1).float()
    text_prompt = [BOS, START_OF_TURN] + text_ids(18) + [END_OF_TURN, START_OF_TURN]
    short_prompt = [BOS, START_OF_TURN] + text_ids(5)

    img_kw = dict(pixel_values=pixels, token_type_ids=torch.tensor([token_type]))
    image_logits = model(input_ids=torch.tensor([image_prompt]), **img_kw).logits[0]
    text_logits = model(input_ids=torch.tensor([text_prompt])).logits[0]
    # Image features straight from the projector (debugging aid for the vision tower).
    image_features = model.model.get_image_features(pixels).pooler_output[0]

    image_greedy = hf_generate(model, image_prompt, True, **img_kw)
    image_greedy_nc = greedy_no_cache(model, image_prompt, MAX_NEW, **img_kw)
    text_greedy = hf_generate(model, text_prompt, True)
    text_greedy_nc = greedy_no_cache(model, text_prompt, MAX_NEW)
    assert image_greedy == image_greedy_nc, (image_greedy, image_greedy_nc)
    assert text_greedy == text_greedy_nc, (text_greedy, text_greedy_nc)

    # Batched, left-padded text prompts (greedy) through HF generate.
    batch = [text_prompt, short_prompt]
    width = max(len(p) for p in batch)
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    out = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=MAX_NEW,
        eos_token_id=[EOS, END_OF_TURN], pad_token_id=PAD, top_k=None, top_p=None,
    )
    batch_greedy = []
    for row in out[:, width:].tolist():
        toks = []
        for t in row:
            toks.append(t)
            if t in (EOS, END_OF_TURN):
                break
        batch_greedy.append(toks)
    short_greedy = hf_generate(model, short_prompt, True)

    # Teacher-forced completion log-probs at temperature 0.7 (two completions of the image prompt).
    completions = [image_greedy[:12], text_ids(10)]
    image_lp = [completion_logprobs(model, image_prompt, c, TEMPERATURE, pixel_values=pixels,
                                    token_type_ids=torch.tensor([token_type + [0] * len(c)])) for c in completions]
    text_completions = [text_greedy[:12], text_ids(7)]
    text_lp = [completion_logprobs(model, text_prompt, c, TEMPERATURE) for c in text_completions]

    margins = {
        "image": min_top2_margin(model, image_prompt, image_greedy, **img_kw),
        "text": min_top2_margin(model, text_prompt, text_greedy),
    }
    print("greedy margins", margins)

    save_file(
        {
            "pixel_values": pixels.contiguous(),
            "image_logits": image_logits.contiguous(),
            "text_logits": text_logits.contiguous(),
            "image_features": image_features.contiguous(),
        },
        os.path.join(OUT_VLM, "reference.safetensors"),
    )
    ref = {
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "temperature": TEMPERATURE,
        "max_new_tokens": MAX_NEW,
        "image_prompt": image_prompt,
        "image_token_type_ids": token_type,
        "text_prompt": text_prompt,
        "short_prompt": short_prompt,
        "image_greedy": image_greedy,
        "text_greedy": text_greedy,
        "short_greedy": short_greedy,
        "batch_left_padded_greedy": batch_greedy,
        "image_completions": completions,
        "image_completion_logprobs": image_lp,
        "text_completions": text_completions,
        "text_completion_logprobs": text_lp,
        "greedy_min_top2_margin": margins,
    }
    with open(os.path.join(OUT_VLM, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)

    # ---------------- text-only model (4.x config keys, softcaps) ----------------
    tcfg = text_config(final_logit_softcapping=3.0, attn_logit_softcapping=2.5)
    torch.manual_seed(0)
    tmodel = Gemma3ForCausalLM(tcfg).eval().float()
    tmodel.config._attn_implementation = "eager"
    randomize(tmodel, 7)
    os.makedirs(OUT_TEXT, exist_ok=True)
    tmodel.save_pretrained(OUT_TEXT, safe_serialization=True)
    generation_config().save_pretrained(OUT_TEXT)
    # Rewrite config.json in the transformers 4.x style and check it loads to the same model.
    path = os.path.join(OUT_TEXT, "config.json")
    with open(path) as f:
        c = json.load(f)
    c.pop("rope_parameters")
    c.pop("layer_types")
    c["rope_theta"] = 1_000_000.0
    c["rope_local_base_freq"] = 10_000.0
    c["rope_scaling"] = {"rope_type": "linear", "factor": 8.0}
    c["sliding_window_pattern"] = 3
    with open(path, "w") as f:
        json.dump(c, f, indent=2)
    reloaded = Gemma3ForCausalLM.from_pretrained(OUT_TEXT, dtype=torch.float32, attn_implementation="eager").eval()
    assert reloaded.config.layer_types == tmodel.config.layer_types, reloaded.config.layer_types
    t_logits = reloaded(input_ids=torch.tensor([text_prompt])).logits[0]
    assert torch.allclose(t_logits, tmodel(input_ids=torch.tensor([text_prompt])).logits[0], atol=1e-6)
    t_greedy = hf_generate(reloaded, text_prompt, True)
    t_greedy_nc = greedy_no_cache(reloaded, text_prompt, MAX_NEW)
    assert t_greedy == t_greedy_nc
    t_comp = [t_greedy[:12]]
    t_lp = [completion_logprobs(reloaded, text_prompt, c, TEMPERATURE) for c in t_comp]
    save_file({"text_logits": t_logits.contiguous()}, os.path.join(OUT_TEXT, "reference.safetensors"))
    with open(os.path.join(OUT_TEXT, "reference.json"), "w") as f:
        json.dump(
            {
                "transformers": __import__("transformers").__version__,
                "temperature": TEMPERATURE,
                "text_prompt": text_prompt,
                "text_greedy": t_greedy,
                "text_completions": t_comp,
                "text_completion_logprobs": t_lp,
                "greedy_min_top2_margin": min_top2_margin(reloaded, text_prompt, t_greedy),
            },
            f,
            indent=1,
        )
    sampling_reference(rng)
    print("image greedy", image_greedy)
    print("text greedy", text_greedy)
    print("batch greedy", batch_greedy, "short alone", short_greedy)
    print("text-only greedy", t_greedy)


if __name__ == "__main__":
    main()

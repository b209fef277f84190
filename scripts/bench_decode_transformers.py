#!/usr/bin/env python3
"""transformers' side of `medgrpo bench decode`: same snapshot, same synthetic prompt, same sizes.

    MEDGRPO_BENCH_MODEL=/tmp/gemma3-270m /work/venv/bin/python scripts/bench_decode_transformers.py
    MEDGRPO_BENCH_MODEL=/tmp/gemma3-270m target/release/medgrpo bench decode

Both use f32 on CPU with greedy decoding and no eos (exactly N new tokens); G=4 is four copies of
one prompt in a batch (transformers has no shared-prefix fork, so it prefills four rows).
Threads: torch uses torch.get_num_threads() (set OMP_NUM_THREADS to match burn's pool).
"""

import os
import resource
import time

import torch
from transformers import Gemma3ForCausalLM

torch.set_grad_enabled(False)


def main():
    d = os.environ["MEDGRPO_BENCH_MODEL"]
    n_prompt = int(os.environ.get("MEDGRPO_BENCH_PROMPT_TOKENS", 128))
    n_new = int(os.environ.get("MEDGRPO_BENCH_NEW_TOKENS", 32))
    t = time.time()
    model = Gemma3ForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    print(f"load: {time.time() - t:.2f}s ({d}), threads {torch.get_num_threads()}")
    vocab = model.config.vocab_size
    ids = [1000 + (i * 7919) % (vocab - 2000) for i in range(n_prompt)]
    ids[0] = 2

    def gen(batch, new):
        x = torch.tensor([ids] * batch)
        return model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                              max_new_tokens=new, min_new_tokens=new, top_k=None, top_p=None,
                              eos_token_id=None, pad_token_id=0)

    gen(1, 2)  # warm-up
    t = time.time()
    gen(1, 1)
    prefill = time.time() - t
    print(f"prefill: {n_prompt} tokens in {prefill:.3f}s = {n_prompt / prefill:.1f} tokens/s")
    for g in (1, 4):
        t = time.time()
        gen(g, 1)
        pre = time.time() - t
        t = time.time()
        out = gen(g, n_new)
        total = time.time() - t
        steps = out.shape[1] - n_prompt - 1
        dec = total - pre
        print(f"decode G={g}: {out.shape[1] - n_prompt} new tokens x {g} in {total:.3f}s (prefill {pre:.3f}s) "
              f"= {dec * 1000 / steps:.1f} ms/step, {steps * g / dec:.1f} tokens/s")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

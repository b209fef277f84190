"""Baseline for `medgrpo bench grpo`: TRL's GRPOTrainer on CPU doing the same work as
`medgrpo bench grpo` — a tiny random Gemma3ForCausalLM (hidden 256, 4 layers, vocab 4096), LoRA
r16 on q,k,v,o,gate,up,down, num_generations 4, max_completion_length 32,
per_device_train_batch_size 4, gradient_accumulation_steps 2, text prompts of ~64 tokens.

Prints seconds per optimizer step and completions/s as one JSON line.

    python scripts/trl_grpo_bench.py [--steps 6] [--threads 2] [--prompts 2] [--g 4]
                                     [--prompt-tokens 64] [--new-tokens 32]

The step's shape (prompts per step, completions per prompt, token counts) follows the same
knobs as `medgrpo bench grpo` (MEDGRPO_BENCH_PROMPTS, _G, _PROMPT_TOKENS, _NEW_TOKENS), which
passes them here.

Needs: torch, transformers, trl, peft, datasets (pip). Runs offline.
"""

import argparse
import json
import os
import tempfile
import time

import torch
from datasets import Dataset
from peft import LoraConfig
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

VOCAB = 4096


def make_tokenizer():
    """A word-level tokenizer whose 4096 ids all decode, so any sampled id is text."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for i in range(len(specials), VOCAB):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")
    fast.padding_side = "left"
    return fast


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--g", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=64, sliding_window=512,
                           max_position_embeddings=1024, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model = Gemma3ForCausalLM(cfg)
    tok = make_tokenizer()
    g = torch.Generator().manual_seed(1)
    prompts = [" ".join(f"w{int(x)}" for x in torch.randint(4, VOCAB, (args.prompt_tokens,), generator=g)) for _ in range(64)]
    ds = Dataset.from_dict({"prompt": prompts})

    def reward(completions, **kw):
        return [float(len(c) % 7) for c in completions]

    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, s, c, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, s, c, **kw):
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as out:
        conf = GRPOConfig(output_dir=out, use_cpu=True, bf16=False, per_device_train_batch_size=args.g,
                          gradient_accumulation_steps=args.prompts, num_generations=args.g,
                          max_completion_length=args.new_tokens,
                          max_steps=args.steps + args.warmup, learning_rate=1e-5, logging_steps=1000,
                          save_strategy="no", report_to=[], beta=0.0, seed=0, dataloader_num_workers=0)
        lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=conf, train_dataset=ds,
                              processing_class=tok, peft_config=lora, callbacks=[Timer()])
        trainer.train()
    measured = times[args.warmup:]
    step = sum(measured) / len(measured)
    completions_per_step = args.prompts * args.g
    print(json.dumps({"impl": "trl", "trl": __import__("trl").__version__, "torch": torch.__version__,
                      "threads": args.threads, "steps": len(measured), "s_per_step": step,
                      "completions_per_s": completions_per_step / step}))


if __name__ == "__main__":
    main()

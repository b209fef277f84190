#!/usr/bin/env python3
"""Prototype for the demo: can a LoRA on the language model of a tiny random Gemma 3 VLM learn to
read the synthetic opacity's extent from the image? Teacher-forces the warm start's format prefix
(`<start_working_out>opacity<end_working_out><SOLUTION>`) and trains PEFT LoRA (r 8, all LM linear
layers) on the letter, either supervised (cross-entropy over the four letter logits: a fast upper
bound on what GRPO can reach) or, with --grpo G, with GRPO on the letter (G letters sampled from
the 4-letter softmax per prompt, reward = correct, group-normalised advantages; --no-scale drops
the std division like scale_rewards: none).

    /work/venv/bin/python scripts/demo_probe.py MODEL_DIR DATA_DIR [--steps 100] [--lr 3e-3]
        [--logit-scale 10] [--grpo 8] [--no-scale]

MODEL_DIR: a Gemma3ForConditionalGeneration snapshot (tests/fixtures/tiny-gemma3, a merged warm
start the demo wrote to runs/demo/model (then --logit-scale 1: its final norm is already scaled),
or one from scripts/demo_make_model.py); DATA_DIR: train.json/val.json/images from the Rust
generator or scripts/demo_synth_variants.py. Prints validation accuracy every 25 steps and the
confusion matrix.

What it showed (2 shared cores, batch 8, 2026-11-25):
  supervised, fixture model, current extent data (radii .08/.14/.22)     -> 61% @100 steps, none/small confused
  supervised, fixture model, radii .12/.20/.30, brightness 110-140       -> 94% @100
  supervised, fixture model, diffuse haze levels 0/25/50/75 (lr 1e-3)     -> 84% @50
  supervised, 2-layer all-global model, 64px tower (demo_make_model.py)   -> 69% @25, unstable at lr 3e-3
  supervised, from a warm start trained to a uniform letter target        -> 48% @50 (slower than fresh)
  GRPO G8, fresh fixture model, diffuse data, lr 3e-4                     -> 38% @75 and rising (A/B vs C/D split)
  GRPO G8, from the uniform-letter warm start, lr 1e-3 / 3e-4 / 1e-4      -> collapses onto one letter (with or without --no-scale)
"""

import argparse
import json
import os
import time

import numpy as np
import torch
from PIL import Image
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer
from transformers import Gemma3ForConditionalGeneration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "tiny-gemma3")


def load_split(data_dir, split, size):
    d = json.load(open(os.path.join(data_dir, f"{split}.json")))
    items = []
    for k in sorted(d):
        r = d[k]
        img = Image.open(os.path.join(data_dir, r["ImagePath"][0])).convert("RGB").resize((size, size), Image.BILINEAR)
        px = (np.asarray(img, dtype=np.float32) / 255.0 - 0.5) / 0.5
        items.append((r, torch.tensor(px).permute(2, 0, 1)))
    return items


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--logit-scale", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-scale", action="store_true", help="GRPO advantages not divided by the group std (scale_rewards: none)")
    ap.add_argument("--grpo", type=int, default=0, help="G > 0: GRPO on the letter (G samples per prompt, group-normalized advantages) instead of cross-entropy")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    tok = Tokenizer.from_file(os.path.join(FIX, "tokenizer.json"))
    model = Gemma3ForConditionalGeneration.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager")
    cfg = model.config
    with torch.no_grad():
        n = model.model.language_model.norm.weight
        n.copy_(a.logit_scale * (1 + n) - 1)
    mm = cfg.mm_tokens_per_image
    size = cfg.vision_config.image_size
    train = load_split(a.data, "train", size)
    val = load_split(a.data, "val", size)

    def ids_of(r):
        user = r["question"] + "".join("\n" + o for o in r["options"])
        text = (
            "<bos><start_of_turn>user\nAnswer the question.\n\n\n\n<start_of_image>"
            + "<image_soft_token>" * mm
            + "<end_of_image>\n\n"
            + user
            + "<end_of_turn>\n<start_of_turn>model\n<start_working_out>opacity<end_working_out><SOLUTION>"
        )
        return tok.encode(text, add_special_tokens=False).ids

    letters = [tok.encode(c, add_special_tokens=False).ids[0] for c in "ABCD"]
    model = get_peft_model(
        model,
        LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
                   target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"),
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.lr, weight_decay=0.0)

    def logits4(batch):
        ids = [ids_of(r) for r, _ in batch]
        L = max(len(i) for i in ids)
        assert all(len(i) == L for i in ids)
        x = torch.tensor(ids)
        tt = (x == 9).long()
        px = torch.stack([p for _, p in batch])
        out = model(input_ids=x, pixel_values=px, token_type_ids=tt).logits[:, -1]
        return out[:, letters]

    def evaluate():
        model.eval()
        with torch.no_grad():
            pred = torch.cat([logits4(val[i:i + 16]).argmax(-1) for i in range(0, len(val), 16)])
        gold = torch.tensor(["ABCD".index(r["correct_answer"]) for r, _ in val])
        model.train()
        conf = np.zeros((4, 4), dtype=int)
        for g, p in zip(gold.tolist(), pred.tolist()):
            conf[g, p] += 1
        return (pred == gold).float().mean().item(), conf

    rng = np.random.default_rng(a.seed)
    t0 = time.time()
    acc, conf = evaluate()
    print(f"step 0 val acc {acc:.3f}", flush=True)
    for step in range(1, a.steps + 1):
        idx = rng.choice(len(train), a.batch, replace=False)
        batch = [train[i] for i in idx]
        gold = torch.tensor(["ABCD".index(r["correct_answer"]) for r, _ in batch])
        if a.grpo:
            lp = torch.log_softmax(logits4(batch), -1)
            with torch.no_grad():
                samples = torch.multinomial(lp.exp(), a.grpo, replacement=True)
                r = (samples == gold[:, None]).float()
                adv = r - r.mean(1, keepdim=True)
                if not a.no_scale:
                    adv = adv / (r.std(1, keepdim=True) + 1e-4)
            loss = -(adv * lp.gather(1, samples)).mean()
        else:
            loss = torch.nn.functional.cross_entropy(logits4(batch), gold)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            acc, conf = evaluate()
            print(f"step {step} loss {loss.item():.3f} val acc {acc:.3f} ({time.time() - t0:.0f}s)", flush=True)
    print("confusion (rows gold A-D, cols predicted):\n", conf)


if __name__ == "__main__":
    main()

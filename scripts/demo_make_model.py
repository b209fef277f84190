#!/usr/bin/env python3
"""Prototype demo model: a tiny Gemma 3 VLM like tests/fixtures/tiny-gemma3 (same tokenizer,
same randomisation rule as scripts/make_tiny_gemma3.py) with N text layers, all full attention,
and a SigLIP tower at the demo's image size, to test with scripts/demo_probe.py whether a
different architecture reads the image better.

    /work/venv/bin/python scripts/demo_make_model.py OUT_DIR LAYERS IMAGE_SIZE PATCH SEED
    e.g. OUT_DIR 2 64 8 42   (2 layers, 64x64 image, 64 patches pooled to 16 tokens)
"""
import json, os, shutil, sys

import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tiny_gemma3 import text_config, randomize, generation_config, MM_TOKENS, BOI, EOI, IMAGE, PAD, BOS, EOS, END_OF_TURN
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig
out, layers, img, patch, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
tc = text_config()
tc.num_hidden_layers = layers
tc.layer_types = ["full_attention"] * layers
vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=img, patch_size=patch, layer_norm_eps=1e-6, vision_use_head=False)
cfg = Gemma3Config(text_config=tc, vision_config=vision, mm_tokens_per_image=MM_TOKENS, boi_token_index=BOI, eoi_token_index=EOI, image_token_index=IMAGE, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=[EOS, END_OF_TURN])
torch.manual_seed(0)
m = Gemma3ForConditionalGeneration(cfg).eval().float()
with torch.no_grad(): randomize(m, seed)
m.save_pretrained(out, safe_serialization=True)
generation_config().save_pretrained(out)
fix=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "tiny-gemma3")
for f in ["tokenizer.json","tokenizer_config.json","chat_template.jinja","processor_config.json"]:
    shutil.copy(f"{fix}/{f}", f"{out}/{f}")
p=json.load(open(f"{out}/processor_config.json")); p["image_processor"]["size"]={"height":img,"width":img}; json.dump(p,open(f"{out}/processor_config.json","w"),indent=2)

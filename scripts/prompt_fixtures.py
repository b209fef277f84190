#!/usr/bin/env python3
"""Record transformers' Gemma3Processor output on the tiny tokenizer fixture.

Why: src/model/{tokenizer,chat_template,processor}.rs and src/grpo/prompt.rs must give exactly
the ids and pixels that transformers gives for the same conversation and image; the Rust tests
read tests/fixtures/prompt/reference.json (and the PNGs next to it) and never need Python.

What is recorded (all from transformers 5 + tokenizers + PIL in the venv):
- tokenizer cases: ids without / with special tokens, decode with / without specials;
- conversations (system or not, image or not, multi-turn, unicode, generation prompt or not):
  the rendered template text, input_ids and token_type_ids from
  `processor.apply_chat_template(..., tokenize=True, return_dict=True)` (which, unlike a plain
  `processor(text=...)`, does not add a second <bos>);
- images: pixel_values of the image processor (PIL bilinear resize to 32x32, /255, mean/std 0.5)
  for several sizes, grey and RGB, down- and up-scaling.

Run (after scripts/make_tiny_tokenizer.py): /work/venv/bin/python scripts/prompt_fixtures.py
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import AutoProcessor

MODEL_DIR = Path("tests/fixtures/tiny-gemma3")
OUT = Path("tests/fixtures/prompt")

# Must equal medgrpo::config::DEFAULT_SYSTEM_PROMPT (the Rust test checks the builder against
# this conversation).
DEFAULT_SYSTEM_PROMPT = (
    "You are an expert radiologist. Look at the chest X-ray and answer the multiple-choice "
    "question. First think step by step between <start_working_out> and <end_working_out>. "
    "Then give the answer between <SOLUTION> and </SOLUTION> as the option letter followed by a "
    "short reason, for example <SOLUTION>B - small left pleural effusion</SOLUTION>."
)

TEXTS = [
    "Hello, chest X-ray!",
    "  leading and trailing spaces  ",
    "No effusion.\n\nSmall pneumothorax at the right apex.",
    "Épanchement pleural — 3 cm ✓ 肺",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_image><image_soft_token><end_of_image>",
    "",
    "\t tabs\tand  double  spaces",
]


def image_inputs():
    """Deterministic 8-bit test images: (name, HxWxC uint8 array)."""
    rng = np.random.default_rng(1234)
    imgs = [
        ("noise_rgb_40x50", rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)),
        ("noise_grey_97x61", rng.integers(0, 256, size=(97, 61, 1), dtype=np.uint8)),
        ("up_rgb_20x24", rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)),
    ]
    # A smooth grey gradient with an edge, like a radiograph's large structures, 128x100.
    y, x = np.mgrid[0:128, 0:100]
    grad = ((x * 2 + y) % 256).astype(np.uint8)
    grad[40:80, 30:60] = 250
    imgs.append(("gradient_grey_128x100", grad[:, :, None]))
    # Exactly the target size (no resize path differences).
    imgs.append(("same_rgb_32x32", rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)))
    # A real radiograph, if available, downscaled from its full size to 8-bit here.
    return imgs


def pil_of(arr):
    if arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], mode="L")
    return Image.fromarray(arr, mode="RGB")


def conversations():
    q = "Is there a pleural effusion on this chest X-ray?"
    opts = "A. Yes, on the left\nB. Yes, on the right\nC. No\nD. Cannot be determined"
    return [
        {
            "name": "system_image_question",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q + "\n" + opts}]},
            ],
            "add_generation_prompt": True,
            "image": "noise_rgb_40x50",
        },
        {
            "name": "no_system_text_only_string_content",
            "messages": [{"role": "user", "content": "What is the most likely diagnosis?"}],
            "add_generation_prompt": True,
            "image": None,
        },
        {
            "name": "system_string_indication_no_image",
            "messages": [
                {"role": "system", "content": "You are a radiology assistant."},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "Clinical context: fever and cough.\n\n" + q + "\n" + opts + "\n",
                        }
                    ],
                },
            ],
            "add_generation_prompt": True,
            "image": None,
        },
        {
            "name": "image_no_system_text_first",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Describe this image."}, {"type": "image"}]}
            ],
            "add_generation_prompt": True,
            "image": "gradient_grey_128x100",
        },
        {
            "name": "multi_turn_no_generation_prompt",
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Any effusion?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "<SOLUTION>B - blunted angle</SOLUTION>"}]},
                {"role": "user", "content": "  Are you sure?  "},
                {"role": "assistant", "content": "Yes."},
            ],
            "add_generation_prompt": False,
            "image": "noise_grey_97x61",
        },
        {
            "name": "unicode_byte_fallback",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "Réponds en français ✓"}]},
                {"role": "user", "content": [{"type": "text", "text": "Épanchement pleural — 3 cm? 肺"}]},
            ],
            "add_generation_prompt": True,
            "image": None,
        },
        {
            # What src/grpo/prompt.rs must build for the record in its tests (default config).
            "name": "builder_default",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": DEFAULT_SYSTEM_PROMPT}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "image"},
                        {
                            "type": "text",
                            "text": "Clinical context: Shortness of breath and fever.\n\n"
                            "Which finding is present in the right lower lobe?\n"
                            "A. Consolidation\nB. Pneumothorax\nC. Normal lung\nD. Mass",
                        },
                    ],
                },
            ],
            "add_generation_prompt": True,
            "image": "same_rgb_32x32",
        },
    ]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    proc = AutoProcessor.from_pretrained(MODEL_DIR)
    tok = proc.tokenizer

    tokenizer_cases = []
    for t in TEXTS:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        ids_sp = tok(t, add_special_tokens=True)["input_ids"]
        tokenizer_cases.append(
            {
                "text": t,
                "ids": ids,
                "ids_with_specials": ids_sp,
                "decoded_keep_specials": tok.decode(ids_sp, skip_special_tokens=False),
                "decoded_skip_specials": tok.decode(ids_sp, skip_special_tokens=True),
            }
        )

    images = {}
    image_records = []
    for name, arr in image_inputs():
        path = OUT / f"{name}.png"
        pil_of(arr).save(path)
        reloaded = Image.open(path)
        assert np.array_equal(np.asarray(reloaded).reshape(arr.shape), arr)
        images[name] = reloaded
        pv = proc.image_processor(reloaded, return_tensors="np")["pixel_values"][0]
        assert pv.shape == (3, 32, 32), pv.shape
        image_records.append(
            {
                "name": name,
                "file": f"{name}.png",
                "height": int(arr.shape[0]),
                "width": int(arr.shape[1]),
                "channels": int(arr.shape[2]),
                "pixel_values": [float(v) for v in pv.astype(np.float32).reshape(-1)],
            }
        )

    # Pillow's resize with every convolution filter, down and up, non-square: the Rust port of
    # its 8-bit resampling must give the same bytes.
    resize_cases = []
    for name in ["noise_rgb_40x50", "noise_grey_97x61"]:
        im = images[name]
        for code in [1, 2, 3, 4, 5]:
            for size_hw in [(17, 23), (50, 61), (40, 21)]:
                out = np.asarray(im.resize((size_hw[1], size_hw[0]), resample=code))
                resize_cases.append(
                    {
                        "image": name,
                        "resample": code,
                        "height": size_hw[0],
                        "width": size_hw[1],
                        "bytes": out.reshape(-1).tolist(),
                    }
                )

    conv_records = []
    for c in conversations():
        text = proc.apply_chat_template(
            c["messages"], add_generation_prompt=c["add_generation_prompt"], tokenize=False
        )
        kwargs = {}
        if c["image"]:
            kwargs["images"] = [images[c["image"]]]
        out = proc(text=text, add_special_tokens=False, return_tensors="np", **kwargs)
        rec = {
            "name": c["name"],
            "messages": c["messages"],
            "add_generation_prompt": c["add_generation_prompt"],
            "image": c["image"],
            "text": text,
            "input_ids": out["input_ids"][0].tolist(),
            "token_type_ids": out["token_type_ids"][0].tolist() if "token_type_ids" in out else None,
        }
        if c["image"]:
            pv = out["pixel_values"][0].astype(np.float32).reshape(-1)
            ref = next(r for r in image_records if r["name"] == c["image"])["pixel_values"]
            assert np.allclose(pv, ref), "processor and image processor disagree"
        conv_records.append(rec)

    doc = {
        "generator": "scripts/prompt_fixtures.py",
        "transformers": __import__("transformers").__version__,
        "tokenizers": __import__("tokenizers").__version__,
        "pillow": __import__("PIL").__version__,
        "image_seq_length": proc.image_seq_length,
        "tokenizer_cases": tokenizer_cases,
        "conversations": conv_records,
        "images": image_records,
        "resize_cases": resize_cases,
    }
    (OUT / "reference.json").write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
    print("wrote", OUT / "reference.json", len(conv_records), "conversations,", len(image_records), "images")


if __name__ == "__main__":
    main()

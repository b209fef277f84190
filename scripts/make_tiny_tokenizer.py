#!/usr/bin/env python3
"""Build the tiny Gemma-3-style tokenizer + processor fixture in tests/fixtures/tiny-gemma3/.

Why: the Rust tokenizer, chat template and processor code must be checked against what
transformers' own Gemma3Processor produces, without shipping Gemma's 4 MB / 262k-token
tokenizer. This script trains a 512-token BPE (byte fallback, sentencepiece-style "▁" spaces,
exactly the pipeline transformers' GemmaTokenizer builds) on a small English / radiology corpus
written below, puts Gemma 3's special tokens at fixed ids, and saves it with transformers
(GemmaTokenizer + Gemma 3's published chat template + a Gemma3ImageProcessor at 32x32 and
16 image tokens), so `Gemma3Processor.from_pretrained(dir)` works on the result.

Fixed ids: <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4 <start_of_turn>=5 <end_of_turn>=6
<start_of_image>=7 <end_of_image>=8 <image_soft_token>=9; byte tokens <0x00>..<0xFF> = 10..265;
learned pieces 266..511.

Run: /work/venv/bin/python scripts/make_tiny_tokenizer.py [OUT_DIR]
Deterministic: the same corpus gives the same files.
"""

import json
import os
import sys
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE

VOCAB_SIZE = 512
IMAGE_SIZE = 32
MM_TOKENS_PER_IMAGE = 16

SPECIALS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
BYTES = [f"<0x{b:02X}>" for b in range(256)]

# Gemma 3's chat template as shipped by google/gemma-3-*-it (and MedGemma-4B-IT): the system
# message is folded into the first user turn, image items become <start_of_image>.
# Copied verbatim from trl/chat_templates/gemma3.jinja (TRL keeps the original checkpoint's
# template there).
CHAT_TEMPLATE_PATH = None
for base in sys.path:
    p = Path(base) / "trl" / "chat_templates" / "gemma3.jinja"
    if p.is_file():
        CHAT_TEMPLATE_PATH = p
        break

CORPUS = """
The chest radiograph shows clear lungs without focal consolidation.
There is no pleural effusion or pneumothorax. The cardiomediastinal silhouette is normal.
Heart size is within normal limits. No acute cardiopulmonary process.
Frontal and lateral views of the chest were obtained.
Mild cardiomegaly with pulmonary vascular congestion, suggesting fluid overload.
Small bilateral pleural effusions with adjacent atelectasis.
Right lower lobe opacity concerning for pneumonia in the appropriate clinical setting.
Left upper lobe nodule measuring 8 mm; recommend follow-up CT.
Endotracheal tube terminates 4 cm above the carina. Nasogastric tube courses below the diaphragm.
A right internal jugular central venous catheter ends in the superior vena cava.
Interval improvement of the left basilar opacity. Stable appearance of the mediastinum.
Degenerative changes of the thoracic spine. No acute osseous abnormality.
Hyperinflated lungs consistent with chronic obstructive pulmonary disease.
Indication: shortness of breath and fever. Evaluate for pneumonia.
Indication: chest pain, rule out pneumothorax after line placement.
Indication: cough for two weeks. History of smoking.
Findings: The lungs are clear. There is no effusion. The heart is not enlarged.
Impression: No acute findings. Normal chest radiograph.
Which of the following best describes the finding in the right lung?
What is the most likely diagnosis based on this chest X-ray?
Is there evidence of a pleural effusion on this image?
Where is the tip of the endotracheal tube located?
A. Pneumonia
B. Pleural effusion
C. Pneumothorax
D. Normal study
A. Yes
B. No
C. Cannot be determined
D. Right lower lobe
You are a radiology assistant. Look at the chest X-ray and answer the multiple-choice question.
Think step by step inside <start_working_out> and <end_working_out>, then give the answer as
<SOLUTION>letter - short reason</SOLUTION>.
<start_working_out>The right costophrenic angle is blunted, which suggests fluid.<end_working_out>
<SOLUTION>B - blunted right costophrenic angle from a small effusion</SOLUTION>
<SOLUTION>A - focal consolidation in the right lower lobe</SOLUTION>
<SOLUTION>D - no acute abnormality is seen</SOLUTION>
Clinical context: the patient is a 65 year old man with a history of heart failure.
The patient is a 40 year old woman with fever, cough and an elevated white count.
Hello, how are you today? I am fine, thank you. Please describe this image in detail.
The quick brown fox jumps over the lazy dog. Answer the question with a single letter.
Compared with the prior study, there is new opacity at the right base.
Lines and tubes are unchanged in position. The osseous structures are intact.
""".strip()


def corpus_lines():
    """Whole lines plus a few multi-line chunks so "\\n" and "\\n\\n" become pieces."""
    lines = [ln for ln in CORPUS.split("\n") if ln]
    chunks = []
    for i in range(0, len(lines), 4):
        chunks.append("\n".join(lines[i : i + 4]))
        chunks.append("\n\n".join(lines[i : i + 2]))
    return lines * 3 + chunks


def train_bpe():
    """Train a Gemma-style BPE and return (vocab dict with the fixed ids, merges list)."""
    tok = Tokenizer(BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    # Ask for more than needed and trim the latest merges to land exactly on VOCAB_SIZE.
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIALS,
        min_frequency=2,
        show_progress=False,
        # Every printable ASCII character is a piece (as in Gemma's vocab); anything else
        # (accents, emoji) goes through byte fallback, which the tests exercise.
        initial_alphabet=[chr(c) for c in range(33, 127)] + ["\n", "▁"],
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    data = json.loads(tok.to_str())
    trained_vocab = data["model"]["vocab"]
    trained_merges = data["model"]["merges"]

    vocab = {}
    for t in SPECIALS + BYTES:
        vocab[t] = len(vocab)
    for t, _ in sorted(trained_vocab.items(), key=lambda kv: kv[1]):
        if len(vocab) >= VOCAB_SIZE:
            break
        if t not in vocab:
            vocab[t] = len(vocab)
    assert len(vocab) == VOCAB_SIZE, f"corpus too small: {len(vocab)} < {VOCAB_SIZE}"

    merges = []
    for m in trained_merges:
        a, b = m if isinstance(m, list) else m.split(" ")
        if a in vocab and b in vocab and (a + b) in vocab:
            merges.append((a, b))
    return vocab, merges


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/tiny-gemma3")
    out.mkdir(parents=True, exist_ok=True)

    from tokenizers import AddedToken
    from transformers import GemmaTokenizer, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    vocab, merges = train_bpe()
    chat_template = CHAT_TEMPLATE_PATH.read_text() if CHAT_TEMPLATE_PATH else None
    assert chat_template, "trl/chat_templates/gemma3.jinja not found in the venv"

    tok = GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        add_bos_token=True,
        add_eos_token=False,
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    # The turn markers are special in Gemma 3's tokenizer (skipped on decode), like the image ones.
    tok.add_special_tokens(
        {
            "extra_special_tokens": [
                AddedToken(t, special=True, normalized=False) for t in SPECIALS[5:]
            ]
        },
        replace_extra_special_tokens=False,
    )
    tok.chat_template = chat_template
    for t, i in zip(SPECIALS, range(len(SPECIALS))):
        got = tok.convert_tokens_to_ids(t)
        assert got == i, f"{t} has id {got}, want {i}"
    assert len(tok) == VOCAB_SIZE, len(tok)

    image_processor = Gemma3ImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pan_and_scan=False,
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=chat_template,
        image_seq_length=MM_TOKENS_PER_IMAGE,
    )
    processor.save_pretrained(out)
    tok.save_pretrained(out)

    # Sanity: reload and round-trip.
    p2 = Gemma3Processor.from_pretrained(out)
    ids = p2.tokenizer("Hello, chest X-ray!\n\nNo effusion.")["input_ids"]
    print("ids", ids)
    print("decoded", repr(p2.tokenizer.decode(ids)))
    print("files", sorted(os.listdir(out)))


if __name__ == "__main__":
    main()

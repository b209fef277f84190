#!/usr/bin/env python3
"""CUDA checks of a medgrpo binary built with `--features cuda`, against the same committed
reference fixtures the CPU test suite uses (transformers, PEFT + bitsandbytes, TRL 1.16), plus
the demo trained on the GPU and on the CPU of the same machine, side by side.

CI has no GPU, so these checks live here rather than in `cargo test`; run them on a CUDA machine:

    cargo build --release --features cuda
    python3 scripts/gpu_checks.py target/release/medgrpo --out gpu-report [--demo]

Needs only python3 with numpy and safetensors (for reading the gradient fixtures). Prints one line
per check (max deviation against the reference, and whether it is within tolerance) and writes
`report.json` in --out. Exit code 1 if any parity check fails.

Tolerances: on the CPU those of the test suite (1e-4 on log-probs and losses, gradients within
1e-4 relative or 1e-5 absolute). On CUDA, burn's autotuned matmul runs f32 inputs on TF32 tensor
cores (cubek-matmul's `adjust_dtypes`), which rounds operands to 10 mantissa bits, about 1e-3
relative per product, as PyTorch does with `allow_tf32`: the checks then allow 5e-3 on log-probs
and losses and 1e-3 absolute + 1e-2 relative on gradients. The report gives the measured
deviations (and the gradients' relative L2 error) whatever the verdict.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
TINY = FIX / "tiny-gemma3"


def ids(v):
    return ",".join(str(x) for x in v)


class Checker:
    def __init__(self, binary, device):
        self.binary = binary
        self.device = device
        self.rows = []
        # (log-probs / loss, gradient absolute floor, gradient relative): see the module doc.
        self.tol = (1e-4, 1e-5, 1e-4) if device == "cpu" else (5e-3, 1e-3, 1e-2)

    def cli(self, args, expect_json=True):
        t0 = time.time()
        p = subprocess.run(
            [self.binary, *args, "--device", self.device],
            capture_output=True,
            text=True,
        )
        dt = time.time() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({p.returncode}): {p.stderr[-2000:]}")
        return (json.loads(p.stdout) if expect_json else p.stdout), dt

    def record(self, name, dev, tol, seconds, extra=None):
        ok = bool(dev <= tol)
        row = {"check": name, "max_dev": float(dev), "tol": tol, "ok": ok, "seconds": round(seconds, 2)}
        if extra:
            row.update(extra)
        self.rows.append(row)
        print(f"{'ok  ' if ok else 'FAIL'} {name:<44} max dev {dev:.3g} (tol {tol:g}) {seconds:.1f}s", flush=True)

    def failed(self, name, err):
        self.rows.append({"check": name, "ok": False, "error": str(err)})
        print(f"FAIL {name}: {err}", flush=True)


def text_generation(c):
    r = json.loads((TINY / "reference.json").read_text())
    out, dt = c.cli(["generate", "--model", str(TINY), "--input-ids", ids(r["text_prompt"]),
                     "--greedy", "--max-new-tokens", "20", "--json"])
    got = out["completions"][0]["ids"]
    mism = sum(a != b for a, b in zip(got, r["text_greedy"])) + abs(len(got) - len(r["text_greedy"]))
    c.record("generate greedy ids vs transformers", mism, 0, dt)
    for k, comp in enumerate(r["text_completions"]):
        out, dt = c.cli(["logprobs", "--model", str(TINY), "--input-ids", ids(r["text_prompt"]),
                         "--completion-ids", ids(comp), "--temperature", str(r["temperature"]), "--json"])
        dev = np.max(np.abs(np.array(out["logprobs"]) - np.array(r["text_completion_logprobs"][k])))
        c.record(f"logprobs text completion {k} vs transformers", dev, c.tol[0], dt)


def peft_logprobs(c):
    r = json.loads((FIX / "lora" / "tiny_gemma3_peft.json").read_text())
    adapter = str(FIX / "lora" / "tiny_gemma3_adapter")
    base = ["logprobs", "--model", str(TINY), "--input-ids", ids(r["prompt"]),
            "--completion-ids", ids(r["completions"][0]), "--temperature", str(r["temperature"]),
            "--json", "--adapter", adapter]
    for extra, key in [([], "lora_dense"), (["--quant", "nf4", "--double-quant"], "lora_nf4")]:
        out, dt = c.cli(base + extra)
        dev = np.max(np.abs(np.array(out["logprobs"]) - np.array(r[key][0])))
        c.record(f"logprobs {key} vs PEFT+bitsandbytes", dev, c.tol[0], dt)


def trl_losses(c, out_dir):
    cases = sorted(p.stem for p in (FIX / "grpo-vlm").glob("*.json"))
    for case in cases:
        path = FIX / "grpo-vlm" / f"{case}.json"
        exp = json.loads(path.read_text())["expected"]
        q = exp["quant"]
        grads_out = out_dir / f"{case}.grads.safetensors"
        args = ["loss", "--model", str(TINY), "--adapter", str(FIX / "grpo-vlm" / "adapter"),
                "--group", str(path), "--grads", str(grads_out), "--json"]
        if q["nf4"]:
            args += ["--quant", "nf4"] + (["--double-quant"] if q["double_quant"] else [])
        try:
            out, dt = c.cli(args)
        except RuntimeError as e:
            c.failed(f"loss {case}", e)
            continue
        loss_dev = abs(out["loss"] - exp["loss"]) / max(abs(exp["loss"]), 1e-3)
        lp = np.concatenate([np.array(r, dtype=np.float64) for r in out["groups"][0]["logps"]])
        lp_ref = np.concatenate([np.array(r, dtype=np.float64) for r in exp["logps"]])
        lp_dev = float(np.max(np.abs(lp - lp_ref)))
        ours = load_file(str(grads_out))
        theirs = load_file(str(FIX / "grpo-vlm" / exp["grads"]))
        # Deviation in units of the tolerance: |a - b| / (abs + rel |b|), <= 1 passes.
        t, g_abs, g_rel = c.tol
        g_dev = max(float(np.max(np.abs(ours[k] - v) / (g_abs + g_rel * np.abs(v)))) for k, v in theirs.items())
        diff = np.sqrt(sum(float(np.sum((ours[k] - v).astype(np.float64) ** 2)) for k, v in theirs.items()))
        norm = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in theirs.values()))
        dev = max(loss_dev / t, lp_dev / t, g_dev)
        c.record(f"loss+grads {case} vs TRL", dev, 1.0, dt,
                 {"loss_rel": loss_dev, "logps_abs": lp_dev, "grads_in_tol_units": g_dev,
                  "grads_rel_l2": diff / norm})


def demo(binary, device, out_dir, steps):
    run = out_dir / f"demo-{device}"
    cmd = [binary, "pipeline", str(ROOT / "pipelines" / "demo.yaml"),
           "--set", f"model.device={device}", "--set", f"output_dir={run}",
           "--set", f"model.path={run}/model", "--set", f"data.train={run}/data/train.json",
           "--set", f"data.val={run}/data/val.json", "--set", f"shards.dir={run}/shards"]
    if steps:
        cmd += ["--set", f"training.max_steps={steps}"]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    dt = time.time() - t0
    (out_dir / f"demo-{device}.log").write_text(p.stdout + p.stderr)
    row = {"check": f"demo on {device}", "seconds": round(dt, 1), "ok": p.returncode == 0}
    rep = run / "demo_report.json"
    if rep.exists():
        r = json.loads(rep.read_text())
        row["eval_before"] = r["eval_before"].get("accuracy")
        row["eval_after"] = r["eval_after"].get("accuracy")
    metrics = run / "metrics.jsonl"
    if metrics.exists():
        lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
        times = [m["step_time"] for m in lines if "step_time" in m]
        if times:
            row["median_step_time"] = float(np.median(times))
    print(f"{'ok  ' if row['ok'] else 'FAIL'} demo on {device}: {json.dumps(row)}", flush=True)
    if p.returncode != 0:
        print(p.stderr[-3000:], flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--out", default="gpu-report")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--demo", action="store_true", help="also train the demo on the GPU and on the CPU")
    ap.add_argument("--demo-steps", type=int, default=0, help="override the demo's max_steps")
    a = ap.parse_args()
    out_dir = Path(a.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = str(Path(a.binary).resolve())
    c = Checker(binary, a.device)
    for part in (text_generation, peft_logprobs):
        try:
            part(c)
        except Exception as e:  # one broken part must not hide the others' figures
            c.failed(part.__name__, e)
    trl_losses(c, out_dir)
    report = {"device": a.device, "checks": c.rows}
    if a.demo:
        report["demo"] = [demo(binary, d, out_dir, a.demo_steps) for d in (a.device, "cpu")]
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    bad = [r["check"] for r in c.rows if not r["ok"]]
    print(f"{len(c.rows) - len(bad)}/{len(c.rows)} parity checks within tolerance" + (f"; failed: {bad}" if bad else ""))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

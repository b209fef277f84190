#!/usr/bin/env python3
"""The original's image preparation, as the baseline for `medgrpo bench shard`.

For every PNG in DIR: PIL open, 16->8 bit min-max, convert("RGB"), resize((896, 896),
BILINEAR), numpy uint8 array; with --workers k a multiprocessing pool of k processes.
Prints one JSON line: images, seconds, images_per_s, cpu_seconds (user + system of this process
and its workers: on a shared machine, the work done whatever else runs), peak_rss_mb (largest
of the processes).

  python scripts/pil_baseline.py /tmp/medgrpo-bench-shard/png --workers 2 --limit 32
"""

import argparse
import json
import resource
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image


def prepare(path):
    im = Image.open(path)
    a = np.asarray(im).astype(np.float64)
    lo, hi = a.min(), a.max()
    a = np.round((a - lo) / (hi - lo) * 255.0) if hi > lo else np.zeros_like(a)
    im = Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    out = np.asarray(im.resize((896, 896), Image.BILINEAR), dtype=np.uint8)
    return int(out[0, 0, 0]), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_seconds():
    """User + system CPU seconds of this process and its reaped children."""
    return sum(r.ru_utime + r.ru_stime for r in
               (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="only the first N files (sorted)")
    args = ap.parse_args()
    files = sorted(Path(args.dir).glob("*.png"))[: args.limit]
    if not files:
        sys.exit(f"no PNG in {args.dir}")
    t = time.perf_counter()
    c = cpu_seconds()
    if args.workers == 1:
        res = [prepare(f) for f in files]
    else:
        pool = Pool(args.workers)
        res = pool.map(prepare, files, chunksize=1)
        pool.close()
        pool.join()  # reaped workers count in RUSAGE_CHILDREN
    secs = time.perf_counter() - t
    cpu = cpu_seconds() - c
    peak_kb = max(r[1] for r in res)
    print(json.dumps({"images": len(files), "workers": args.workers, "seconds": secs,
                      "images_per_s": len(files) / secs, "cpu_seconds": cpu,
                      "peak_rss_mb": peak_kb / 1024}))


if __name__ == "__main__":
    main()

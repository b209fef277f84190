#!/usr/bin/env python3
"""Reference 8-bit conversion + resize of the real radiographs, with PIL and pydicom.

For each file in ../shared/data/real-cxr (see SOURCES.md there) this writes, under
tests/fixtures/images/, the image converted to 8 bits and resized to SIZE x SIZE exactly as
the Python side would do it:

  PNG/JPEG  PIL open; 8-bit data unchanged; 16-bit min-max to 8 bits; RGB holding grey
            (R == G == B) kept as one grey channel; alpha dropped (PIL convert).
  DICOM     pydicom pixel_array -> apply_modality_lut -> policy -> 8 bits ->
            MONOCHROME1 inversion (255 - v):
              minmax      lo, hi = min, max of the modality values
              percentile  lo, hi = np.percentile(values, [0.5, 99.5])
              window      pydicom apply_voi_lut (VOI LUT or window, PS3.3 C.11.2) whose
                          output range [y_min, y_max] is mapped onto 0..255
            8 bits = clip(round((x - lo) / (hi - lo) * 255), 0, 255), float64.
  resize    PIL Image.resize((SIZE, SIZE), Image.BILINEAR) (antialiased when shrinking).

Outputs: reference.json (one entry per file and policy: status, size, channels, error text
for files that do not decode) and one raw u8 file per entry (SIZE*SIZE*channels bytes,
row-major). The Rust test `data::decode::tests::matches_pil_pydicom_reference` reads them.

Needs pydicom, Pillow, numpy, and for JPEG 2000 / JPEG lossless DICOM the pylibjpeg plugins:
  pip install --target /tmp/data-pylibs pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg
  /work/venv/bin/python scripts/reference_images.py   (adds /tmp/data-pylibs to sys.path)
"""

import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.append("/tmp/data-pylibs")  # appended: the venv's numpy wins

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

SIZE = 224
ROOT = Path(__file__).resolve().parent.parent
SRC = Path(os.environ.get("REAL_CXR", ROOT.parent.parent / "shared/data/real-cxr"))
if not SRC.exists():
    SRC = Path("/work/shared/data/real-cxr")
OUT = ROOT / "tests/fixtures/images"


def to_u8(x, lo, hi):
    x = np.asarray(x, dtype=np.float64)
    if not hi > lo:
        return np.zeros(x.shape, np.uint8)
    return np.clip(np.round((x - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)


def raster(path):
    im = Image.open(path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im).astype(np.float64)
        return to_u8(a, a.min(), a.max())
    if im.mode in ("LA", "L"):
        return np.asarray(im.convert("L"))
    a = np.asarray(im.convert("RGB"))
    if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
        return a[..., 0].copy()
    return a


def voi_range(ds):
    # apply_windowing's output range (pydicom 3: pixels/processing.py)
    if ds.get("ModalityLUTSequence"):
        return 0, 2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    bits = ds.BitsStored
    if ds.PixelRepresentation == 0:
        y_min, y_max = 0, 2**bits - 1
    else:
        y_min, y_max = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    slope = float(getattr(ds, "RescaleSlope", 1.0))
    intercept = float(getattr(ds, "RescaleIntercept", 0.0))
    y_min, y_max = y_min * slope + intercept, y_max * slope + intercept
    return y_min, y_max


def dicom(path, policy):
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array
    if getattr(ds, "NumberOfFrames", 1) not in (None, 1) and raw.ndim == 3:
        raw = raw[0]
    x = apply_modality_lut(raw, ds).astype(np.float64)
    if policy == "minmax":
        v = to_u8(x, x.min(), x.max())
    elif policy == "percentile":
        lo, hi = np.percentile(x, [0.5, 99.5])
        v = to_u8(x, lo, hi)
    else:
        if "VOILUTSequence" in ds:
            lut = ds.VOILUTSequence[0]
            y = apply_voi_lut(x, ds).astype(np.float64)
            bits = int(lut.LUTDescriptor[2])
            v = to_u8(y, 0, max(2**bits - 1, y.max()))
        elif "WindowCenter" in ds:
            y = apply_voi_lut(x, ds, prefer_lut=False).astype(np.float64)
            lo, hi = voi_range(ds)
            v = to_u8(y, lo, hi)
        else:
            v = to_u8(x, x.min(), x.max())
    if ds.PhotometricInterpretation == "MONOCHROME1":
        v = 255 - v
    return v


def resize(a):
    mode = "L" if a.ndim == 2 else "RGB"
    return np.asarray(Image.fromarray(a, mode).resize((SIZE, SIZE), Image.BILINEAR))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    entries = []
    for path in sorted(SRC.iterdir()):
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".dcm"):
            continue
        policies = ["minmax", "percentile", "window"] if path.suffix == ".dcm" else ["minmax"]
        for policy in policies:
            e = {"file": path.name, "policy": policy, "size": SIZE}
            try:
                a = dicom(path, policy) if path.suffix == ".dcm" else raster(path)
            except Exception as ex:  # recorded: the Rust side must fail on the same files
                e.update(status="failed", error=f"{type(ex).__name__}: {ex}")
                entries.append(e)
                print(f"{path.name} [{policy}]: FAILED {e['error'][:100]}")
                continue
            h, w = a.shape[:2]
            r = resize(a)
            name = f"{path.stem}.{policy}.{SIZE}.u8"
            (OUT / name).write_bytes(np.ascontiguousarray(r).tobytes())
            lossy = path.suffix == ".dcm" and pydicom.dcmread(
                path, stop_before_pixels=True
            ).file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
            e.update(
                status="ok",
                # Lossy JPEG decoders are not bit-exact (ISO 10918-2 allows +-1 per sample;
                # pydicom's own pillow and pylibjpeg plugins disagree by 1 on 3% of the
                # NIH-Kaggle file), and a percentile stretch turns +-1 into +-2.
                tolerance=2 if lossy else 1,
                source_width=w,
                source_height=h,
                channels=1 if r.ndim == 2 else 3,
                raw=name,
                sha256=hashlib.sha256(r.tobytes()).hexdigest(),
                mean_8bit_full=float(a.mean()),
            )
            entries.append(e)
            print(f"{path.name} [{policy}]: {w}x{h} -> {SIZE} ch={e['channels']} mean={a.mean():.2f}")
    meta = {
        "generator": "scripts/reference_images.py",
        "pillow": Image.__version__,
        "pydicom": pydicom.__version__,
        "numpy": np.__version__,
        "entries": entries,
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()

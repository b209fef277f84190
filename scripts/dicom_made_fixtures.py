#!/usr/bin/env python3
"""Small DICOM fixtures made from a real chest radiograph, for DICOM encodings the real
radiographs in shared/data/real-cxr do not have, and their pydicom references.

The real-cxr folder has no JPEG-LS file and no CR whose modality transform is a Modality LUT
Sequence, so this script makes them from `cxr_cr_nema-wg04_RG1_UNCR.dcm` (a real CR chest,
15-bit stored, MONOCHROME1). To keep the committed files small (well under 1 MB each) it
takes every 5th row and column of the real image (391 x 369 real pixel values; no pixel is
invented), and writes into tests/fixtures/images/made/:

  rg1_sub5_jpegls_lossless.dcm   transfer syntax 1.2.840.10008.1.2.4.80 (JPEG-LS lossless),
                                 encoded by CharLS (pydicom's pyjpegls plugin)
  rg1_sub5_jpegls_near2.dcm      1.2.840.10008.1.2.4.81 (JPEG-LS near-lossless, NEAR = 2)
  rg1_sub5_modality_lut.dcm      explicit VR little endian, no rescale slope/intercept, but a
                                 Modality LUT Sequence (0028,3000): a 16-bit, 24000-entry,
                                 log-shaped table starting at stored value 1000, so the real
                                 values below 1000 and above 24999 exercise both clamps; window
                                 2048/4096 in the table's output units
  made.json                      per file: the transfer syntax, the size, the SHA-256 of
                                 pydicom's `apply_modality_lut(ds.pixel_array, ds)` as
                                 little-endian u16 (the exact values the Rust decoder must
                                 give), and, per 8-bit policy, the 224 x 224 reference image
                                 made exactly as scripts/reference_images.py makes those of
                                 the real files (`<stem>.<policy>.224.u8`, tolerance 1):
                                 min-max for the JPEG-LS files, all three policies for the
                                 Modality LUT file

The JPEG-LS streams are decoded twice here, by CharLS (pyjpegls) and by libjpeg
(pylibjpeg-libjpeg), and both must agree (and, for the lossless file, equal the source
pixels), so the reference does not rest on one decoder. The Rust test
`data::decode::tests::made_dicoms_match_pydicom` reads made.json; tests never run Python.

Needs pydicom 3, numpy, Pillow, pyjpegls, pylibjpeg and pylibjpeg-libjpeg:
  /work/venv/bin/pip install pyjpegls pylibjpeg pylibjpeg-libjpeg
  /work/venv/bin/python scripts/dicom_made_fixtures.py
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, pixel_array
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, JPEGLSNearLossless

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_images as ref  # noqa: E402  (same 8-bit policies and resize)

ROOT = Path(__file__).resolve().parent.parent
SRC = Path(os.environ.get("REAL_CXR", ROOT.parent.parent / "shared/data/real-cxr"))
if not SRC.exists():
    SRC = Path("/work/shared/data/real-cxr")
OUT = ROOT / "tests/fixtures/images/made"
STEP = 5


def source():
    ds = pydicom.dcmread(SRC / "cxr_cr_nema-wg04_RG1_UNCR.dcm")
    arr = np.ascontiguousarray(ds.pixel_array[::STEP, ::STEP])
    ds.Rows, ds.Columns = arr.shape
    ds.PixelData = arr.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds, arr


def decode_both(path):
    """pixel_array with CharLS and with libjpeg; they must agree."""
    a = pixel_array(path, decoding_plugin="pyjpegls")
    b = pixel_array(path, decoding_plugin="pylibjpeg")
    assert np.array_equal(a, b), f"{path.name}: CharLS and libjpeg disagree"
    return a


def jpegls(arr, name, uid, near):
    ds, _ = source()
    kwargs = {"jls_error": near} if near else {}
    ds.compress(uid, arr, encoding_plugin="pyjpegls", **kwargs)
    path = OUT / name
    ds.save_as(path, enforce_file_format=True)
    got = decode_both(path)
    if near == 0:
        assert np.array_equal(got, arr), "lossless JPEG-LS must give the source back"
    else:
        assert int(np.abs(got.astype(np.int32) - arr).max()) <= near
    return path


def modality_lut(arr, name):
    ds, _ = source()
    first, entries = 1000, 24000
    x = np.arange(entries, dtype=np.float64)
    table = np.round(65535 * np.log1p(x / 400.0) / np.log1p((entries - 1) / 400.0))
    item = Dataset()
    item.LUTDescriptor = [entries, first, 16]
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "OW", table.astype("<u2").tobytes())
    ds.ModalityLUTSequence = Sequence([item])
    for kw in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        if kw in ds:
            delattr(ds, kw)
    ds.WindowCenter, ds.WindowWidth = 32768, 65536
    path = OUT / name
    ds.save_as(path, enforce_file_format=True)
    back = apply_modality_lut(pydicom.dcmread(path).pixel_array, pydicom.dcmread(path))
    assert back.min() == table[0] and back.max() == table[-1], "both clamps exercised"
    return path


def entry(path, policies):
    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds)
    assert values.min() >= 0 and values.max() <= 65535
    e = {
        "file": path.name,
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
        "width": int(ds.Columns),
        "height": int(ds.Rows),
        "bytes": path.stat().st_size,
        "modality_sha256": hashlib.sha256(values.astype("<u2").tobytes()).hexdigest(),
        "references": [],
    }
    for policy in policies:
        r = ref.resize(ref.dicom(path, policy))
        raw = f"{path.stem}.{policy}.224.u8"
        (OUT / raw).write_bytes(np.ascontiguousarray(r).tobytes())
        e["references"].append({"policy": policy, "raw": raw, "tolerance": 1})
    return e


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    _, arr = source()
    files = [
        jpegls(arr, "rg1_sub5_jpegls_lossless.dcm", JPEGLSLossless, 0),
        jpegls(arr, "rg1_sub5_jpegls_near2.dcm", JPEGLSNearLossless, 2),
        modality_lut(arr, "rg1_sub5_modality_lut.dcm"),
    ]
    # The JPEG-LS files differ from the native path only in the pixel decoder, so one policy
    # checks them; the Modality LUT changes the values every policy sees.
    policies = [["minmax"], ["minmax"], ["minmax", "percentile", "window"]]
    entries = [entry(p, pol) for p, pol in zip(files, policies)]
    for e in entries:
        print(f"{e['file']}: {e['width']}x{e['height']}, {e['bytes']} bytes")
    meta = {
        "generator": "scripts/dicom_made_fixtures.py",
        "source": "cxr_cr_nema-wg04_RG1_UNCR.dcm, every 5th row and column",
        "pydicom": pydicom.__version__,
        "numpy": np.__version__,
        "entries": entries,
    }
    (OUT / "made.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()

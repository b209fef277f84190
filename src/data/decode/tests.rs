use std::io::Cursor;

use serde_json::Value;

use super::*;
use crate::data::convert::Image8;
use crate::data::testutil::{fixtures, real};

const RG1_UNCR: &str = "cxr_cr_nema-wg04_RG1_UNCR.dcm";
const RG1_J2KR: &str = "cxr_cr_nema-wg04_RG1_J2KR.dcm";
const BROKEN: &str = "cxr_dx_pydicom-issue966_invalid-COM-marker.dcm";
const CANINE: &str = "other_dx-canine-thorax_highdicom_dx_image.dcm";

fn policy(name: &str) -> Conversion {
    match name {
        "minmax" => Conversion::Minmax,
        "percentile" => Conversion::Percentile,
        "window" => Conversion::Window,
        other => panic!("unknown policy {other}"),
    }
}

/// Every real radiograph, converted and resized to 224, against PIL + pydicom
/// (scripts/reference_images.py): ±1 grey level on at least 99% of pixels (±2 for lossy JPEG
/// pixel data, whose decoders are not bit-exact; see the script), same channel count, and the
/// files Python cannot decode fail here too, with the file named.
#[test]
fn matches_pil_pydicom_reference() {
    let dir = fixtures();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let entries = meta["entries"].as_array().unwrap();
    assert!(entries.len() >= 20, "fixture list too short");
    for e in entries {
        let file = e["file"].as_str().unwrap();
        let pol = e["policy"].as_str().unwrap();
        let path = real(file);
        let got = load_u8(&path, policy(pol), 224);
        if e["status"] == "failed" {
            let err = format!("{:#}", got.expect_err(file));
            assert!(err.contains(file), "error must name the file: {err}");
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{file}: {e:#}"));
        let want = std::fs::read(dir.join(e["raw"].as_str().unwrap())).unwrap();
        assert_eq!(
            got.channels as u64,
            e["channels"].as_u64().unwrap(),
            "{file}"
        );
        let tol = e["tolerance"].as_u64().unwrap() as u8;
        assert_close(&format!("{file} [{pol}]"), &got.data, &want, tol);
    }
}

/// At most 1% of the pixels differ by more than `tol` grey levels.
fn assert_close(what: &str, got: &[u8], want: &[u8], tol: u8) {
    assert_eq!(got.len(), want.len(), "{what}");
    let off = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.abs_diff(**b) > tol)
        .count();
    let max = got
        .iter()
        .zip(want)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    let frac = off as f64 / want.len() as f64;
    eprintln!("{what}: {:.4}% off by >{tol}, max diff {max}", frac * 100.0);
    assert!(
        frac <= 0.01,
        "{what}: {:.3}% of pixels differ by more than {tol}",
        frac * 100.0
    );
}

/// DICOM encodings the real files lack, made from the real CR chest RG1 by
/// scripts/dicom_made_fixtures.py: JPEG-LS lossless (.80) and near-lossless (.81), and a CR
/// whose modality transform is a Modality LUT Sequence. The modality values equal pydicom's
/// `apply_modality_lut(pixel_array)` exactly (its JPEG-LS decoded by CharLS and by libjpeg,
/// which agree), and each 8-bit policy's 224 image is within ±1 of pydicom + PIL.
#[test]
fn made_dicoms_match_pydicom() {
    use sha2::{Digest, Sha256};
    let dir = fixtures().join("made");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("made.json")).unwrap()).unwrap();
    let entries = meta["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for e in entries {
        let file = e["file"].as_str().unwrap();
        let path = dir.join(file);
        let dec = decode_file(&path).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        assert_eq!(
            (dec.width as u64, dec.height as u64),
            (e["width"].as_u64().unwrap(), e["height"].as_u64().unwrap()),
            "{file}"
        );
        let Samples::F32(v) = &dec.samples else {
            panic!("{file}: not modality values")
        };
        assert!(
            v.iter()
                .all(|x| x.fract() == 0.0 && (0.0..=65535.0).contains(x))
        );
        let le: Vec<u8> = v.iter().flat_map(|&x| (x as u16).to_le_bytes()).collect();
        let sum: String = Sha256::digest(&le)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sum, e["modality_sha256"].as_str().unwrap(), "{file}");
        for r in e["references"].as_array().unwrap() {
            let pol = r["policy"].as_str().unwrap();
            let got = load_u8(&path, policy(pol), 224).unwrap();
            let want = std::fs::read(dir.join(r["raw"].as_str().unwrap())).unwrap();
            let tol = r["tolerance"].as_u64().unwrap() as u8;
            assert_close(&format!("{file} [{pol}]"), &got.data, &want, tol);
        }
    }
}

fn full(name: &str, p: Conversion) -> Image8 {
    to_u8(decode_file(&real(name)).unwrap(), p)
}

#[test]
fn rg1_uncompressed_and_jpeg2000_give_identical_images() {
    let a = decode_file(&real(RG1_UNCR)).unwrap();
    let b = decode_file(&real(RG1_J2KR)).unwrap();
    assert_eq!((a.width, a.height), (1841, 1955));
    assert_eq!(a, b);
    for p in [
        Conversion::Minmax,
        Conversion::Percentile,
        Conversion::Window,
    ] {
        assert_eq!(
            load_u8(&real(RG1_UNCR), p, 224).unwrap(),
            load_u8(&real(RG1_J2KR), p, 224).unwrap()
        );
    }
}

/// MONOCHROME1 (RG1: low stored values are white): the smallest stored value becomes 255,
/// the largest 0 — the reverse of what the raw values give.
#[test]
fn monochrome1_is_inverted() {
    let dec = decode_file(&real(RG1_UNCR)).unwrap();
    assert!(dec.monochrome1);
    let Samples::F32(v) = &dec.samples else {
        panic!("DICOM gives modality values")
    };
    let (imin, _) = v
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .unwrap();
    let (imax, _) = v
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap();
    assert_eq!((v[imin], v[imax]), (874.0, 26479.0)); // SOURCES.md: values 874..26479
    let img = to_u8(dec, Conversion::Minmax);
    assert_eq!((img.data[imin], img.data[imax]), (255, 0));
}

/// The undecodable file fails with its name and the decoder's reason, while the other files
/// of the folder decode (checked for every file in `matches_pil_pydicom_reference`).
#[test]
fn invalid_jpeg2000_file_is_an_error_naming_it() {
    let err = format!(
        "{:#}",
        load_u8(&real(BROKEN), Conversion::Minmax, 224).unwrap_err()
    );
    assert!(
        err.contains(BROKEN) && err.contains("cannot decode"),
        "{err}"
    );
}

/// A 16-bit PNG written from RG1's stored values converts under minmax exactly like the DICOM
/// (which is MONOCHROME1, hence the inversion).
#[test]
fn sixteen_bit_png_from_rg1_converts_like_the_dicom() {
    let dec = decode_file(&real(RG1_UNCR)).unwrap();
    let Samples::F32(v) = &dec.samples else {
        panic!()
    };
    let raw: Vec<u16> = v.iter().map(|&x| x as u16).collect();
    let png =
        image::ImageBuffer::<image::Luma<u16>, _>::from_raw(dec.width, dec.height, raw).unwrap();
    let mut bytes = Vec::new();
    png.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rg1_16bit.png");
    std::fs::write(&path, &bytes).unwrap();

    let from_png = to_u8(decode_file(&path).unwrap(), Conversion::Minmax);
    let from_dcm = full(RG1_UNCR, Conversion::Minmax);
    assert_eq!(from_png.channels, 1);
    let inverted: Vec<u8> = from_png.data.iter().map(|x| 255 - x).collect();
    assert_eq!(inverted, from_dcm.data);
}

/// A DICOM data set without the Part-10 header (preamble, `DICM`, group 2) still decodes.
#[test]
fn dicom_without_part10_header_decodes() {
    let bytes = std::fs::read(real(CANINE)).unwrap();
    assert_eq!(&bytes[128..132], b"DICM");
    // (0002,0000) UL group length right after DICM: tag 4 + VR 2 + length 2 + value 4.
    let group_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    let bare = &bytes[144 + group_len..];
    let a = decode_bytes(&bytes).unwrap();
    let b = decode_bytes(bare).unwrap();
    assert_eq!(a, b);
    assert_eq!((b.width, b.height), (211, 169));
}

#[test]
fn rgb_png_holding_grey_is_stored_as_grey() {
    let img = load_u8(
        &real("cxr_png8rgb_tbx11k_h0001.png"),
        Conversion::Minmax,
        64,
    )
    .unwrap();
    assert_eq!((img.channels, img.data.len()), (1, 64 * 64));
}

/// Colour, alpha, 16-bit RGBA and JPEG inputs through the whole path.
#[test]
fn png_and_jpeg_layouts_decode() {
    let dir = tempfile::tempdir().unwrap();
    let rgba = image::RgbaImage::from_fn(8, 4, |x, y| {
        image::Rgba([x as u8 * 30, y as u8 * 60, 7, 100])
    });
    let p = dir.path().join("rgba.png");
    rgba.save(&p).unwrap();
    let img = load_u8(&p, Conversion::Minmax, 8).unwrap();
    assert_eq!((img.width, img.height, img.channels), (8, 8, 3));
    let dec = to_u8(decode_file(&p).unwrap(), Conversion::Minmax);
    assert_eq!(&dec.data[..6], &[0, 0, 7, 30, 0, 7]); // alpha dropped, like PIL convert("RGB")

    let la = image::ImageBuffer::<image::LumaA<u16>, _>::from_fn(4, 4, |x, _| {
        image::LumaA([x as u16 * 1000, 5])
    });
    let p = dir.path().join("la16.png");
    la.save(&p).unwrap();
    let dec = to_u8(decode_file(&p).unwrap(), Conversion::Minmax);
    assert_eq!(&dec.data[..4], &[0, 85, 170, 255]);

    let grey = image::GrayImage::from_fn(16, 16, |x, y| image::Luma([(x * 8 + y) as u8]));
    let p = dir.path().join("g.jpg");
    grey.save(&p).unwrap();
    let img = load_u8(&p, Conversion::Minmax, 4).unwrap();
    assert_eq!((img.channels, img.data.len()), (1, 16));
}

#[test]
fn garbage_and_missing_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("trunc.png", b"\x89PNG\r\n\x1a\n\0\0".to_vec()),
        ("trunc.jpg", vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 1]),
        (
            "noise.bin",
            (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("empty.dcm", Vec::new()),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let err = format!("{:#}", load_u8(&p, Conversion::Minmax, 8).unwrap_err());
        assert!(err.contains(name), "{err}");
    }
    let err = format!(
        "{:#}",
        load_u8(&dir.path().join("nope.png"), Conversion::Minmax, 8).unwrap_err()
    );
    assert!(
        err.contains("cannot read") && err.contains("nope.png"),
        "{err}"
    );
}

/// The sharder's grey-PNG fast path (reused buffers, range without a histogram) gives exactly
/// what the general path gives (decode → `to_u8` → resize), for 16-bit and 8-bit grey PNGs,
/// every policy, shrinking and same-size, with one `Scratch` reused across different images;
/// colour PNGs are left to the general path.
#[test]
fn grey_png_fast_path_equals_the_general_path() {
    let dir = tempfile::tempdir().unwrap();
    let p16 = dir.path().join("synth16.png");
    image::ImageBuffer::<image::Luma<u16>, _>::from_raw(
        120,
        150,
        crate::bench::synthetic::synthetic_cxr(120, 150, 1),
    )
    .unwrap()
    .save(&p16)
    .unwrap();
    let p8 = real("cxr_png8_nih-cxr14_00000001_000_512px.png");
    let mut scratch = Scratch::default();
    for path in [&p16, &p8, &p16] {
        let bytes = std::fs::read(path).unwrap();
        for pol in ["minmax", "percentile", "window"] {
            let pol = policy(pol);
            let dec = decode_file(path).unwrap();
            let side = dec.width;
            let general = to_u8(dec, pol);
            for size in [64, side] {
                let want = crate::data::resize::resize(&general, size, size).unwrap();
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let fast = grey_png(&bytes, pol, size, &mut a, &mut b, &mut Resizer::new())
                    .unwrap()
                    .expect("grey PNG takes the fast path");
                assert_eq!(fast, want, "{} {pol:?} {size}", path.display());
                assert_eq!(load_u8_with(path, pol, size, &mut scratch).unwrap(), want);
            }
        }
    }
    let rgb = std::fs::read(real("cxr_png8rgb_tbx11k_h0001.png")).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let r = grey_png(
        &rgb,
        Conversion::Minmax,
        8,
        &mut a,
        &mut b,
        &mut Resizer::new(),
    );
    assert!(r.unwrap().is_none());
}

/// The records of bench-style images (synthetic radiographs written as the benchmark writes
/// them: 16-bit grey, zlib level 6, adaptive filters) are pinned by SHA-256, computed with the
/// decoder as it was before the sharder's own grey-PNG decoder (`png` crate rows, 2026-11-26):
/// a faster decoder must give byte-identical records.
#[test]
fn bench_image_records_are_pinned() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let mut scratch = Scratch::default();
    let mut got = Vec::new();
    for seed in [0u64, 1] {
        let p = dir.path().join(format!("b{seed}.png"));
        let (w, h) = (480, 600);
        crate::bench::synthetic::write_png16(
            &p,
            w,
            h,
            &crate::bench::synthetic::synthetic_cxr(w, h, seed),
        )
        .unwrap();
        let bytes = std::fs::read(&p).unwrap();
        for pol in ["minmax", "percentile"] {
            let img = load_u8_with(&p, policy(pol), 224, &mut scratch).unwrap();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let fast = grey_png(
                &bytes,
                policy(pol),
                224,
                &mut a,
                &mut b,
                &mut Resizer::new(),
            );
            assert_eq!(
                fast.unwrap().as_ref(),
                Some(&img),
                "the fast path decodes it"
            );
            assert_eq!((img.width, img.height, img.channels), (224, 224, 1));
            let hex: String = Sha256::digest(&img.data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            got.push(format!("{seed} {pol} {hex}"));
        }
    }
    assert_eq!(got, PINNED);
}

const PINNED: [&str; 4] = [
    "0 minmax d96f8c6a654331f863c324f710e5bed922bef918b8051fa6c2fbe81d25bba563",
    "0 percentile f30ac57dcedf93b13e366c97420e8585fff46e6cfc0656742f3e5d87c24675c2",
    "1 minmax 5dde7574e9cdc0ddf25cfd3b371bb22610dfc607340e54103234686562c7ddca",
    "1 percentile 9784e4fd0f18d2d88d665d34e967bd500ed5c2de49f09abf776112605a42a3a8",
];

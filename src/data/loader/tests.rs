use std::path::Path;

use serde_json::{Value, json};

use super::*;
use crate::config::Conversion;
use crate::data::shard::{BuildOptions, build};
use crate::data::testutil::{real_cxr_dir, real_key};

/// The whole path (decode → 8-bit → PIL bilinear resize → RGB → normalise) against the
/// pixel_values of transformers' Gemma 3 image processor on the prompt area's fixture images
/// (tests/fixtures/prompt, resized to 32×32): within one grey level (2/255) everywhere.
#[test]
fn pixels_match_the_gemma3_image_processor() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prompt");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let images = r["images"].as_array().unwrap();
    assert!(!images.is_empty());
    for im in images {
        let want: Vec<f32> = im["pixel_values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let side = ((want.len() / 3) as f64).sqrt() as u32;
        let img = load_u8(
            &dir.join(im["file"].as_str().unwrap()),
            Conversion::Minmax,
            side,
        )
        .unwrap();
        let got = to_pixels(&img.data, side, img.channels, side).unwrap();
        assert_eq!(got.shape(), [3, side as usize, side as usize]);
        let max = got
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max <= 2.0 / 255.0 + 1e-6,
            "{}: max |diff| {max}",
            im["name"]
        );
    }
}

#[test]
fn grey_records_expand_to_rgb_in_minus_one_to_one() {
    let p = to_pixels(&[0, 255, 51, 102], 2, 1, 2).unwrap();
    let v = [-1.0, 1.0, -0.6, -0.2];
    for c in 0..3 {
        for (i, want) in v.iter().enumerate() {
            assert!((p.data[c * 4 + i] - want).abs() < 1e-6);
        }
    }
    // Colour keeps its planes; a size change resizes.
    let p = to_pixels(&[255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255], 2, 3, 2).unwrap();
    assert_eq!(&p.data[..4], &[1.0, -1.0, -1.0, 1.0]);
    let p = to_pixels(&[7; 16], 4, 1, 2).unwrap();
    assert_eq!(p.shape(), [3, 2, 2]);
    assert!(to_pixels(&[1, 2, 3], 2, 1, 2).is_err());
}

fn dataset(dir: &Path) -> Config {
    let files = [
        "cxr_png8_mhh-hannover_006f3a8a.png",
        "cxr_png8rgb_tbx11k_h0001.png",
        "other_dx-canine-thorax_highdicom_dx_image.dcm",
        "cxr_dx_pydicom-issue966_invalid-COM-marker.dcm",
    ];
    let v: serde_json::Map<String, Value> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            (
                format!("q{i}"),
                json!({"question": "?", "options": ["A. a", "B. b"], "correct_answer": "B", "ImagePath": [f]}),
            )
        })
        .collect();
    let json = dir.join("d.json");
    std::fs::write(&json, Value::Object(v).to_string()).unwrap();
    let yaml = format!(
        "model: {{path: 'builtin:tiny'}}\ndata: {{train: '{}', image_root: '{}', cache_capacity: 4}}\nshards: {{dir: '{}', image_size: 24, records_per_shard: 3}}\n",
        json.display(),
        real_cxr_dir().display(),
        dir.join("shards").display()
    );
    Config::from_yaml_str(&yaml, &[]).unwrap()
}

/// Shards and raw files give the same pixels; the raw cache counts hits and misses; a failed
/// image is an error naming why; other settings are refused.
#[test]
fn shard_and_raw_sources_agree_and_settings_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let config = dataset(tmp.path());
    let raw = Loader::open(&config, 32).unwrap();
    assert!(matches!(raw.source(), Source::Raw(_)));
    build(
        &config,
        &BuildOptions {
            workers: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let sharded = Loader::open(&config, 32).unwrap();
    let Source::Shards(store) = sharded.source() else {
        panic!("expected shards")
    };
    assert_eq!(store.len(), 4);
    let root = real_cxr_dir();
    for key in [
        "cxr_png8_mhh-hannover_006f3a8a.png",
        "cxr_png8rgb_tbx11k_h0001.png",
        "other_dx-canine-thorax_highdicom_dx_image.dcm",
    ] {
        let (path, key) = (root.join(key), real_key(key));
        let a = sharded.pixels(&key, &path).unwrap();
        let b = raw.pixels(&key, &path).unwrap();
        assert_eq!(a, b, "{key}");
        assert_eq!(a.shape(), [3, 32, 32]);
        // zero-copy: the record is a slice of the mapping
        assert_eq!(store.record(&key).unwrap().len(), 24 * 24);
    }
    let again = "cxr_png8_mhh-hannover_006f3a8a.png";
    raw.pixels(again, &root.join(again)).unwrap();
    assert_eq!(raw.cache_stats(), CacheStats { hits: 1, misses: 3 });
    assert_eq!(sharded.cache_stats(), CacheStats::default());

    let bad = "cxr_dx_pydicom-issue966_invalid-COM-marker.dcm";
    let e = sharded.pixels(&real_key(bad), &root.join(bad)).unwrap_err();
    assert!(
        format!("{e:#}").contains("failed when the shards were built"),
        "{e:#}"
    );
    assert!(sharded.pixels("nope.png", Path::new("nope.png")).is_err());

    let mut other = config.clone();
    other.shards.conversion = Conversion::Percentile;
    let e = Loader::open(&other, 32).err().unwrap();
    assert!(format!("{e:#}").contains("other settings"), "{e:#}");
}

/// `to_tensor` on the CPU backend, checked to equal `to_tensor_host`; shape and values.
fn tensor_values(px: &PixelBytes) -> (Vec<usize>, Vec<f32>) {
    let device = Default::default();
    let d = px.to_tensor::<burn::backend::Flex>(&device).into_data();
    let h = px
        .to_tensor_host::<burn::backend::Flex>(&device)
        .into_data();
    assert_eq!(d.shape, h.shape);
    assert_eq!(d.to_vec::<f32>().unwrap(), h.to_vec::<f32>().unwrap());
    (d.shape.to_vec(), d.to_vec::<f32>().unwrap())
}

/// The compact path on real radiograph shard records: `pixels_u8` borrows the mapping when the
/// shard size is the model's (no copy), resizes otherwise, and `to_f32()` equals `pixels()`
/// bit for bit in both cases and from the raw cache; `to_tensor` (CPU backend) gives the same
/// values as `[1, 3, S, S]`.
#[test]
fn compact_pixels_equal_the_f32_path_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let config = dataset(tmp.path());
    let raw = Loader::open(&config, 24).unwrap();
    build(
        &config,
        &BuildOptions {
            workers: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let root = real_cxr_dir();
    for model_size in [24, 32] {
        let loader = Loader::open(&config, model_size).unwrap();
        let Source::Shards(store) = loader.source() else {
            panic!("expected shards")
        };
        for key in [
            "cxr_png8_mhh-hannover_006f3a8a.png",
            "other_dx-canine-thorax_highdicom_dx_image.dcm",
        ] {
            let (path, key) = (root.join(key), real_key(key));
            let key = key.as_str();
            let px = loader.pixels_u8(key, &path).unwrap();
            assert_eq!((px.size(), px.channels()), (model_size, 1));
            assert_eq!(px.data().len(), (model_size * model_size) as usize);
            if model_size == 24 {
                assert_eq!(px.data().as_ptr(), store.record(key).unwrap().as_ptr());
                let from_raw = raw.pixels_u8(key, &path).unwrap();
                assert_eq!(from_raw.data(), px.data(), "{key}");
            }
            let want = loader.pixels(key, &path).unwrap();
            let got = px.to_f32();
            assert_eq!(got.shape(), want.shape());
            assert!(
                got.data
                    .iter()
                    .zip(&want.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{key} at {model_size}: to_f32 differs from pixels()"
            );
            let (shape, values) = tensor_values(&px);
            let s = model_size as usize;
            assert_eq!(shape, vec![1, 3, s, s]);
            let max = values
                .iter()
                .zip(&want.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(max == 0.0, "{key}: tensor differs by {max}");
        }
        let bad = "cxr_dx_pydicom-issue966_invalid-COM-marker.dcm";
        let e = loader
            .pixels_u8(&real_key(bad), &root.join(bad))
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("failed when the shards were built"));
    }
}

/// An RGB record becomes channel-first planes in the tensor, like `to_pixels`.
#[test]
fn colour_records_become_channel_first_tensors() {
    let bytes: Vec<u8> = (0..2 * 2 * 3).map(|i| (i * 21) as u8).collect();
    let px = PixelBytes {
        backing: Backing::Owned(Arc::new(bytes)),
        size: 2,
        channels: 3,
    };
    let want = px.to_f32();
    let (shape, values) = tensor_values(&px);
    assert_eq!(shape, vec![1, 3, 2, 2]);
    // R plane first (bytes 0, 3, 6, 9), then G (1, 4, 7, 10).
    let f = |v: u8| (v as f32 / 255.0 - 0.5) / 0.5;
    assert_eq!(&want.data[..5], &[f(0), f(63), f(126), f(189), f(21)]);
    for (a, b) in values.iter().zip(&want.data) {
        assert!((a - b).abs() <= 1e-6, "{values:?} vs {:?}", want.data);
    }
}

//! Processor checks against transformers' Gemma3Processor / Gemma3ImageProcessor (PIL backend)
//! on the tiny fixture: ids and token types exactly, pixels within 1e-5.

use super::*;
use crate::model::tokenizer::tests::{prompt_fixture_dir, reference, tiny_dir};

fn tiny() -> Gemma3Processor {
    Gemma3Processor::from_dir(tiny_dir()).unwrap()
}

/// Decode a fixture PNG into an interleaved 8-bit buffer with the channel count it was saved
/// with (PIL mode L -> 1, RGB -> 3).
pub(crate) fn load_png(file: &str, channels: usize) -> (usize, usize, Vec<u8>) {
    let img = image::open(prompt_fixture_dir().join(file)).unwrap();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data = match channels {
        1 => img.to_luma8().into_raw(),
        3 => img.to_rgb8().into_raw(),
        c => panic!("fixture with {c} channels"),
    };
    (h, w, data)
}

#[test]
fn config_from_transformers5_processor_config() {
    let p = tiny();
    let c = p.config();
    assert_eq!((c.height, c.width, c.image_seq_length), (32, 32, 16));
    assert_eq!(c.resample, 2);
    assert_eq!(c.image_mean, [0.5; 3]);
    assert!((c.rescale_factor - 1.0 / 255.0).abs() < 1e-12);
    assert_eq!(reference().image_seq_length, 16);
}

#[test]
fn config_from_transformers4_files() {
    // MedGemma's hub layout: preprocessor_config.json + processor_config.json with only the
    // sequence length.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        r#"{"do_normalize": true, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            "resample": 2, "rescale_factor": 0.00392156862745098,
            "size": {"height": 896, "width": 896}, "do_pan_and_scan": null,
            "image_processor_type": "Gemma3ImageProcessor"}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("processor_config.json"),
        r#"{"image_seq_length": 256, "processor_class": "Gemma3Processor"}"#,
    )
    .unwrap();
    let c = ProcessorConfig::from_dir(dir.path()).unwrap();
    assert_eq!(c, ProcessorConfig::default());
    // Pan-and-scan is refused with a reason naming the file.
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        r#"{"do_pan_and_scan": true}"#,
    )
    .unwrap();
    let e = format!("{:#}", ProcessorConfig::from_dir(dir.path()).unwrap_err());
    assert!(
        e.contains("pan_and_scan") && e.contains("preprocessor_config.json"),
        "{e}"
    );
}

#[test]
fn ids_and_token_types_match_transformers() {
    let p = tiny();
    let r = reference();
    for c in &r.conversations {
        let messages: Vec<Message> = serde_json::from_value(c.messages.clone()).unwrap();
        let (text, enc) = p
            .apply_chat_template(&messages, c.add_generation_prompt)
            .unwrap();
        assert_eq!(text, c.text, "{}", c.name);
        assert_eq!(enc.input_ids, c.input_ids, "input_ids of {}", c.name);
        assert_eq!(
            enc.num_images,
            usize::from(c.image.is_some()),
            "images of {}",
            c.name
        );
        let want_types = c
            .token_type_ids
            .clone()
            .unwrap_or_else(|| vec![0; c.input_ids.len()]);
        assert_eq!(
            enc.token_type_ids, want_types,
            "token_type_ids of {}",
            c.name
        );
    }
}

#[test]
fn image_block_layout_by_hand() {
    let p = tiny();
    let enc = p.encode_text("<bos><start_of_image>", 1).unwrap();
    // <bos>, "\n" "\n" (the tiny vocab has no "\n\n" piece), boi, 16 soft, eoi, "\n" "\n".
    let nl = p.tokenizer().token_to_id("\n").unwrap();
    let mut want = vec![2, nl, nl, 7];
    want.extend([9; 16]);
    want.extend([8, nl, nl]);
    assert_eq!(enc.input_ids, want);
    assert_eq!(enc.token_type_ids.iter().sum::<u32>(), 16);
    assert_eq!(enc.token_type_ids[4..20], [1; 16]);
}

#[test]
fn placeholder_count_must_match_images() {
    let p = tiny();
    let e = p
        .encode_text("<start_of_image> and <start_of_image>", 1)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("2 <start_of_image> placeholders but 1 images"),
        "{e}"
    );
    // A literal soft token in the text would shift the image block: refused.
    let e = p.encode_text("<image_soft_token>", 0).unwrap_err();
    assert!(e.to_string().contains("image soft tokens"), "{e}");
}

/// fast_image_resize computes PIL's bilinear filter with 16-bit coefficients (the Pillow-SIMD
/// scheme) while Pillow uses 22-bit ones, so some 8-bit results round the other way: the
/// check is "within one 8-bit step" (2/255 after normalization), and exact for no resize.
/// Measured on these fixtures: 0 values off for the same-size image, 99 of 3072 (3%) for the
/// smooth grey gradient, ~24% for uniform noise (the worst case for rounding).
#[test]
fn pixels_match_pil_image_processor() {
    let p = tiny();
    let r = reference();
    assert!(r.images.len() >= 5);
    let step = 2.0 / 255.0;
    for case in &r.images {
        let (h, w, data) = load_png(&case.file, case.channels);
        assert_eq!((h, w), (case.height, case.width), "{}", case.name);
        let img = ImageU8 {
            height: h,
            width: w,
            channels: case.channels,
            data: &data,
        };
        let got = p.preprocess_image(&img).unwrap();
        assert_eq!(got.len(), case.pixel_values.len(), "{}", case.name);
        let diffs: Vec<f32> = got
            .iter()
            .zip(&case.pixel_values)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let off = diffs.iter().filter(|&&d| d > 1e-5).count();
        for &d in &diffs {
            // Either equal, or exactly one 8-bit step apart.
            assert!(
                d <= 1e-5 || (d - step).abs() <= 1e-5,
                "{}: |diff| {d} is not 0 or one 8-bit step",
                case.name
            );
        }
        let frac = off as f64 / diffs.len() as f64;
        match case.name.as_str() {
            "same_rgb_32x32" => assert_eq!(off, 0, "no resize must be exact"),
            "gradient_grey_128x100" => assert!(frac < 0.05, "{}: {off} off", case.name),
            _ => assert!(frac < 0.3, "{}: {off} off", case.name),
        }
    }
}

#[test]
fn rgb_conversion_like_pil() {
    let grey_alpha = ImageU8 {
        height: 1,
        width: 2,
        channels: 2,
        data: &[10, 255, 20, 0],
    };
    assert_eq!(to_rgb(&grey_alpha).unwrap(), [10, 10, 10, 20, 20, 20]);
    let rgba = ImageU8 {
        height: 1,
        width: 1,
        channels: 4,
        data: &[1, 2, 3, 4],
    };
    assert_eq!(to_rgb(&rgba).unwrap(), [1, 2, 3]);
    let short = ImageU8 {
        height: 2,
        width: 2,
        channels: 3,
        data: &[0; 5],
    };
    assert!(
        to_rgb(&short)
            .unwrap_err()
            .to_string()
            .contains("expected 2x2x3")
    );
}

#[test]
fn normalization_endpoints() {
    // Same size: no resize, 0 -> -1, 255 -> 1, channel-first layout.
    let cfg = ProcessorConfig {
        height: 1,
        width: 2,
        ..Default::default()
    };
    let img = ImageU8 {
        height: 1,
        width: 2,
        channels: 3,
        data: &[0, 255, 0, 255, 0, 255],
    };
    let got = preprocess_image(&img, &cfg).unwrap();
    assert_eq!(got, [-1.0, 1.0, 1.0, -1.0, -1.0, 1.0]);
}

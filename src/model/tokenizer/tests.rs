//! Tokenizer checks against transformers' GemmaTokenizer on the tiny fixture
//! (tests/fixtures/prompt/reference.json, written by scripts/prompt_fixtures.py).

use std::path::PathBuf;

use serde::Deserialize;

use super::*;

/// The tiny Gemma-3-style model directory (tokenizer, template, processor config).
pub(crate) fn tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma3")
}

/// The folder of the reference outputs and their images.
pub(crate) fn prompt_fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prompt")
}

/// tests/fixtures/prompt/reference.json.
#[derive(Debug, Deserialize)]
pub(crate) struct Reference {
    pub image_seq_length: usize,
    pub tokenizer_cases: Vec<TokenizerCase>,
    pub conversations: Vec<Conversation>,
    pub images: Vec<ImageCase>,
    pub resize_cases: Vec<ResizeCase>,
}

/// One Pillow `Image.resize` of a fixture image.
#[derive(Debug, Deserialize)]
pub(crate) struct ResizeCase {
    pub image: String,
    pub resample: u32,
    pub height: usize,
    pub width: usize,
    pub bytes: Vec<u8>,
}

/// One text through the tokenizer.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenizerCase {
    pub text: String,
    pub ids: Vec<u32>,
    pub ids_with_specials: Vec<u32>,
    pub decoded_keep_specials: String,
    pub decoded_skip_specials: String,
}

/// One conversation through `processor.apply_chat_template` + the processor.
#[derive(Debug, Deserialize)]
pub(crate) struct Conversation {
    pub name: String,
    pub messages: serde_json::Value,
    pub add_generation_prompt: bool,
    pub image: Option<String>,
    pub text: String,
    pub input_ids: Vec<u32>,
    pub token_type_ids: Option<Vec<u32>>,
}

/// One image through the image processor.
#[derive(Debug, Deserialize)]
pub(crate) struct ImageCase {
    pub name: String,
    pub file: String,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub pixel_values: Vec<f32>,
}

/// Parse the reference file.
pub(crate) fn reference() -> Reference {
    let path = prompt_fixture_dir().join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tiny() -> GemmaTokenizer {
    GemmaTokenizer::from_dir(tiny_dir()).unwrap()
}

#[test]
fn special_ids_are_the_fixture_layout() {
    let t = tiny();
    let s = t.special();
    assert_eq!((s.pad, s.eos, s.bos), (Some(0), 1, 2));
    assert_eq!((s.start_of_turn, s.end_of_turn), (Some(5), Some(6)));
    assert_eq!((s.boi, s.eoi, s.image), (Some(7), Some(8), Some(9)));
    assert_eq!(t.vocab_size(), 512);
    assert!(t.is_special(6) && t.is_special(9));
    assert!(!t.is_special(300));
    assert_eq!(t.id_to_token(7).as_deref(), Some("<start_of_image>"));
    assert_eq!(t.token_to_id("<0x0A>"), Some(10 + 0x0A));
}

#[test]
fn ids_and_decoding_match_transformers() {
    let t = tiny();
    let r = reference();
    assert!(r.tokenizer_cases.len() >= 8);
    for c in &r.tokenizer_cases {
        assert_eq!(t.encode(&c.text).unwrap(), c.ids, "ids of {:?}", c.text);
        assert_eq!(
            t.encode_with_special_tokens(&c.text).unwrap(),
            c.ids_with_specials,
            "ids with specials of {:?}",
            c.text
        );
        assert_eq!(
            t.decode(&c.ids_with_specials, false).unwrap(),
            c.decoded_keep_specials,
            "decode keeping specials of {:?}",
            c.text
        );
        assert_eq!(
            t.decode(&c.ids_with_specials, true).unwrap(),
            c.decoded_skip_specials,
            "decode skipping specials of {:?}",
            c.text
        );
    }
}

#[test]
fn byte_fallback_round_trips_unicode() {
    let t = tiny();
    let text = "Épanchement — ✓ 肺 🫁";
    let ids = t.encode(text).unwrap();
    // Non-ASCII characters are not pieces of the tiny vocabulary: they must go through bytes.
    assert!(ids.iter().any(|&i| (10..266).contains(&i)));
    assert_eq!(t.decode(&ids, true).unwrap(), text);
}

#[test]
fn names_from_config_accept_both_forms() {
    let v: Value = serde_json::json!({
        "bos_token": {"content": "<s>", "lstrip": false},
        "eos_token": "</s>",
        "image_token": 7
    });
    let n = SpecialTokenNames::from_tokenizer_config(&v);
    assert_eq!(n.bos, "<s>");
    assert_eq!(n.eos, "</s>");
    assert_eq!(n.image, "<image_soft_token>");
}

#[test]
fn missing_bos_is_an_error_naming_the_file() {
    let names = SpecialTokenNames {
        bos: "<nope>".into(),
        ..Default::default()
    };
    let err = GemmaTokenizer::from_file(tiny_dir().join("tokenizer.json"), names).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("bos_token") && msg.contains("<nope>") && msg.contains("tokenizer.json"));
}

#[test]
fn check_ids_rejects_out_of_vocab() {
    assert!(check_ids(&[0, 511], 512).is_ok());
    let e = check_ids(&[0, 512], 512).unwrap_err().to_string();
    assert!(e.contains("512") && e.contains("position 1"), "{e}");
}

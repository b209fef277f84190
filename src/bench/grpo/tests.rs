use std::path::Path;

use super::*;

type AB = burn::backend::Autodiff<burn::backend::Flex>;

/// The written snapshot loads as a text-only Gemma 3 with the issue's sizes, and its
/// tokenizer round-trips the TRL script's word prompts (`w<id>` ↔ id) and decodes like
/// transformers (words joined by spaces, specials skipped).
#[test]
fn the_bench_model_has_the_issues_shape_and_a_word_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    write_bench_model(dir.path(), 0).unwrap();
    let m =
        crate::model::gemma3::Gemma3::<burn::backend::Flex>::load(dir.path(), &Default::default())
            .unwrap();
    assert!(m.config.vision.is_none());
    let c = &m.config.text;
    assert_eq!(
        (
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers
        ),
        (VOCAB, HIDDEN, INTERMEDIATE, LAYERS)
    );
    assert_eq!((c.num_key_value_heads, c.head_dim), (KV_HEADS, HEAD_DIM));
    let tok = GemmaTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.decode(&[5, 4095, 1], true).unwrap(), "w5 w4095");
    assert_eq!(length_mod_7("w5 w4095"), 1.0);
}

/// Two optimizer steps through the real chain on the benchmark model: 8 completions a step,
/// the reward is the script's, and the adapters move (a non-zero gradient reached AdamW).
#[test]
fn two_steps_train_through_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    write_bench_model(dir.path(), 0).unwrap();
    let r = run_training::<AB>(dir.path(), 1, 1, &StepShape::DEFAULT).unwrap();
    assert_eq!(r.logs.len(), 2);
    for log in &r.logs {
        assert!(log.applied);
        let m = &log.metrics;
        assert!(m["loss"].is_finite());
        assert!(m["completions/mean_length"] > 0.0);
        assert!((0.0..=6.0).contains(&m["reward"]));
    }
    assert!(r.logs.iter().any(|l| l.metrics["grad_norm"] > 0.0));
    assert!(r.completions_per_s > 0.0);
}

/// The text-only fixture (Gemma3ForCausalLM) with the tiny VLM's tokenizer and chat template
/// (a text-only checkpoint ships no processor settings), in a temporary directory.
fn text_model_dir(root: &Path) -> std::path::PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = root.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(fixtures.join("tiny-gemma3-text").join(f), dir.join(f)).unwrap();
    }
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(fixtures.join("tiny-gemma3").join(f), dir.join(f)).unwrap();
    }
    dir
}

fn text_record(i: usize, with_image: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "question": format!("Which lobe is affected in case {i}?"),
        "options": ["A. upper", "B. lower"],
        "correct_answer": if i.is_multiple_of(2) { "A" } else { "B" },
        "correct_answer_explanation": "The opacity sits there.",
    });
    if with_image {
        v["ImagePath"] = serde_json::json!(["img/x.png"]);
    }
    v
}

fn text_config(root: &Path, model: &Path, records: serde_json::Value, on_bad: &str) -> Config {
    let data = root.join("train.json");
    std::fs::write(&data, records.to_string()).unwrap();
    crate::grpo::train::tiny_demo_config(
        root,
        &[
            format!("data.train={}", data.display()),
            format!("data.on_bad_item={on_bad}"),
            format!("model.path={}", model.display()),
            "training.max_steps=2".into(),
            "training.save_steps=1".into(),
            "training.max_completion_length=8".into(),
        ],
    )
}

/// `medgrpo pipeline` trains a text-only checkpoint on text-only records (no loader, no
/// image block in the prompt) and writes checkpoints; a record with an image on that model is
/// an error naming the question, so `on_bad_item: abort` stops on it.
#[test]
fn pipeline_trains_a_text_only_model_on_text_records() {
    let root = tempfile::tempdir().unwrap();
    let model = text_model_dir(root.path());
    let mut records = serde_json::Map::new();
    for i in 0..5 {
        records.insert(format!("t{i}"), text_record(i, false));
    }
    let cfg = text_config(root.path(), &model, records.into(), "skip");
    let s = crate::grpo::train::train::<AB>(&cfg, &Default::default(), None, false).unwrap();
    assert_eq!(s.steps, 2);
    assert!(s.report.skipped.is_empty(), "{:?}", s.report.skipped);
    assert!(s.logs.iter().all(|l| l.metrics["loss"].is_finite()));
    assert!(
        root.path()
            .join("run/checkpoint-2/adapter_model.safetensors")
            .is_file()
    );

    let root2 = tempfile::tempdir().unwrap();
    let model2 = text_model_dir(root2.path());
    let bad = serde_json::json!({"i0": text_record(0, true)});
    let cfg = text_config(root2.path(), &model2, bad, "abort");
    let err = crate::grpo::train::train::<AB>(&cfg, &Default::default(), None, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("i0") && err.contains("text-only"),
        "unexpected error: {err}"
    );
}

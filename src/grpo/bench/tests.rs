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
    let r = run_training::<AB>(dir.path(), 1, 1).unwrap();
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

//! The training footprint of the original's MedGemma run (pipelines/train.yaml on MedGemma-4B's
//! config.json): its terms add up, NF4 shrinks the base to what `memory_report` counts, and
//! checkpointing and the batch change exactly the terms they should. (How close the prediction
//! comes to a measured peak is a benchmark's question: `medgrpo bench grpo` prints both.)

use super::*;
use crate::quant::testutil::fixture;

fn medgemma() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture("nf4/medgemma-4b-it/config.json")).unwrap(),
    )
    .unwrap()
}

fn train(extra: &[&str]) -> Config {
    let overrides: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    Config::from_yaml_str(include_str!("../../../pipelines/train.yaml"), &overrides).unwrap()
}

fn term(f: &Footprint, name: &str) -> usize {
    f.terms.iter().find(|t| t.name == name).unwrap().bytes
}

#[test]
fn terms_add_up_and_nf4_shrinks_only_the_base() {
    let m = medgemma();
    let nf4 = footprint(&train(&["quantization.load_in_4bit=true"]), &m, 300).unwrap();
    let dense = footprint(&train(&["quantization.load_in_4bit=false"]), &m, 300).unwrap();
    assert_eq!(
        nf4.total(),
        nf4.terms.iter().map(|t| t.bytes).sum::<usize>()
    );
    assert!(term(&nf4, "base weights") * 3 < term(&dense, "base weights"));
    for name in [
        "LoRA + grads + AdamW",
        "sampler KV cache",
        "learner activations",
    ] {
        assert_eq!(term(&nf4, name), term(&dense, name), "{name}");
    }
    // MedGemma's 34 layers x 2 x 4 kv heads x 256 x 4 B per cached token.
    let t = &train(&[]).training;
    let rows = t.prompts_per_step() * t.num_generations;
    let cached = rows * (300 + t.max_completion_length) + t.prompts_per_step() * 300;
    assert_eq!(
        term(&nf4, "sampler KV cache"),
        34 * 2 * 4 * 256 * 4 * cached
    );
}

#[test]
fn checkpointing_keeps_layer_inputs_only_and_is_advised_when_over() {
    let m = medgemma();
    let off = footprint(&train(&["training.gradient_checkpointing=false"]), &m, 300).unwrap();
    let on = footprint(&train(&["training.gradient_checkpointing=true"]), &m, 300).unwrap();
    let (a_off, a_on) = (
        term(&off, "learner activations"),
        term(&on, "learner activations"),
    );
    assert!(a_on * 10 < a_off, "{a_on} vs {a_off}");
    assert_eq!(off.total() - on.total(), a_off - a_on);
    let tight = off.total() - 1;
    let text = off.render(Some(tight));
    assert!(text.contains("does NOT fit"), "{text}");
    assert!(text.contains("gradient_checkpointing: true"), "{text}");
    assert!(on.render(Some(on.total())).contains("fits"));
}

#[test]
fn more_completions_per_step_cost_more() {
    let m = medgemma();
    let small = footprint(&train(&["training.per_device_train_batch_size=1"]), &m, 300).unwrap();
    let large = footprint(&train(&["training.per_device_train_batch_size=2"]), &m, 300).unwrap();
    for name in ["sampler KV cache", "sampler logits"] {
        assert!(term(&large, name) > term(&small, name), "{name}");
    }
}

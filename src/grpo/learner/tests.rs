//! The learner with `beta > 0` inside the real training chain (tiny VLM, demo data): the
//! reference is the policy with its adapters disabled, so with fresh adapters (B = 0) the first
//! step's KL is exactly 0 and, once the adapter has moved, positive; `kl` and `entropy` are logged.
//! The loss/gradient maths itself is checked against TRL in `commands::loss::tests`.

use std::path::Path;

use crate::config::Config;
use crate::grpo::train::train;

type AB = burn::backend::Autodiff<burn::backend::Flex>;

fn config(dir: &Path, beta: f64) -> Config {
    let d = dir.display();
    let overrides: Vec<String> = vec![
        format!("output_dir={d}/run"),
        format!("data.train={d}/data/train.json"),
        format!("data.val={d}/data/val.json"),
        format!("shards.dir={d}/shards"),
        "training.max_steps=2".into(),
        "rewards.weights.explanation=0.6".into(),
        "rewards.weights.evidence=0.2".into(),
        "rewards.weights.conciseness=0.1".into(),
        "training.per_device_train_batch_size=4".into(),
        "training.num_generations=4".into(),
        "training.logging_steps=1".into(),
        "training.save_steps=100".into(),
        "training.max_completion_length=12".into(),
        format!("training.beta={beta}"),
        format!(
            "model.path={}/tests/fixtures/tiny-gemma3",
            env!("CARGO_MANIFEST_DIR")
        ),
    ];
    Config::from_yaml_str(include_str!("../../../pipelines/demo.yaml"), &overrides).unwrap()
}

fn run(beta: f64) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), beta);
    crate::demo::synth::generate(&dir.path().join("data"), "train", 16, 32, cfg.seed).unwrap();
    let summary = train::<AB>(&cfg, &Default::default(), None, false).unwrap();
    assert_eq!(summary.steps, 2);
    std::fs::read_to_string(dir.path().join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn beta_trains_against_the_adapter_free_reference_and_logs_kl_and_entropy() {
    let m = run(0.04);
    assert_eq!(m.len(), 2);
    let f = |i: usize, k: &str| {
        m[i][k]
            .as_f64()
            .unwrap_or_else(|| panic!("step {i}: no {k} in {}", m[i]))
    };
    // Step 1: fresh adapters (B = 0), so policy == reference: KL exactly 0.
    assert!(f(0, "kl").abs() < 1e-7, "kl at step 1: {}", f(0, "kl"));
    assert!(f(1, "kl") > 0.0, "kl after an update: {}", f(1, "kl"));
    for i in 0..2 {
        let e = f(i, "entropy");
        // tiny-gemma3 has 512 tokens: 0 < entropy <= ln 512.
        assert!(e > 0.0 && e <= (512f64).ln() + 1e-4, "entropy {e}");
        assert!(f(i, "loss").is_finite() && f(i, "grad_norm").is_finite());
    }
}

/// With `beta == 0` zero-spread groups are skipped, so `entropy` (a mean over the groups the
/// learner ran) is logged exactly when some group had a reward spread; never `kl`.
#[test]
fn beta_zero_logs_no_kl_and_entropy_only_for_groups_it_ran() {
    let m = run(0.0);
    for s in &m {
        assert!(s.get("kl").is_none());
        let all_skipped = s["frac_reward_zero_std"].as_f64().unwrap() == 1.0;
        assert_eq!(s.get("entropy").is_none(), all_skipped, "{s}");
    }
}

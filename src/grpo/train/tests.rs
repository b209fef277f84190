use super::*;
use crate::lora::adapter::Adapter;

type AB = burn::backend::Autodiff<burn::backend::Flex>;

fn demo_config(dir: &Path, steps: i64) -> Config {
    tiny_demo_config(
        dir,
        &[
            format!("training.max_steps={steps}"),
            "training.save_steps=1".into(),
            "training.max_completion_length=24".into(),
        ],
    )
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The chain runs end to end on the tiny VLM, logs TRL-named metrics, writes PEFT
/// checkpoints, and resumes exactly: 3 steps in one run and 2 + resume 1 give the same
/// logged figures and byte-identical adapters (data cursor, seeds, adapter and optimizer
/// state all restored).
#[test]
fn pipeline_trains_checkpoints_and_resumes_where_it_left_off() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = demo_config(dir.path(), 3);
    crate::demo::synth::generate(&dir.path().join("data"), "train", 16, 32, cfg.seed).unwrap();
    let full = train::<AB>(&cfg, &Default::default(), None, false).unwrap();
    assert_eq!(full.steps, 3);
    let run = dir.path().join("run");
    let m = metrics(&run);
    assert_eq!(m.len(), 3);
    for key in [
        "loss",
        "reward",
        "reward_std",
        "rewards/correct/mean",
        "grad_norm",
        "learning_rate",
        "completions/mean_length",
        "frac_reward_zero_std",
    ] {
        assert!(m[0].get(key).is_some(), "metrics.jsonl lacks {key}");
    }
    let adapter = Adapter::load(&run.join("checkpoint-3")).unwrap();
    assert_eq!(
        adapter.layers.len(),
        6 * 7,
        "one pair per targeted projection of 6 layers"
    );

    let full_adapter = std::fs::read(run.join("checkpoint-3/adapter_model.safetensors")).unwrap();
    let after_2 = std::fs::read(run.join("checkpoint-2/adapter_model.safetensors")).unwrap();
    assert_ne!(
        full_adapter, after_2,
        "the adapter must change from step to step"
    );

    // Resume from checkpoint 2 with checkpoint 3 and the metrics gone.
    let cfg2 = demo_config(dir.path(), 3);
    let run2 = PathBuf::from(&cfg2.output_dir);
    std::fs::remove_file(run2.join("metrics.jsonl")).unwrap();
    std::fs::remove_dir_all(run2.join("checkpoint-3")).unwrap();
    let resumed = train::<AB>(&cfg2, &Default::default(), Some("latest"), false).unwrap();
    assert_eq!(resumed.steps, 3);
    let r = metrics(&run2);
    assert_eq!(r.len(), 1);
    for key in [
        "reward",
        "rewards/correct/mean",
        "completions/mean_length",
        "loss",
        "grad_norm",
    ] {
        let (a, b) = (m[2][key].as_f64().unwrap(), r[0][key].as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-6 * a.abs().max(1.0),
            "{key}: {a} vs {b} after resume"
        );
    }
}

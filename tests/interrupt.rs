//! Ctrl-C during `medgrpo pipeline`, on the real binary (a signal cannot be sent to one test
//! inside the shared test process): the run stops after the items in flight, exits with 130
//! (not 0 and "done"), and both the run directory and the demo report say it was interrupted.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn demo_overrides(dir: &Path) -> Vec<String> {
    let d = dir.display();
    let root = env!("CARGO_MANIFEST_DIR");
    [
        format!("output_dir={d}/run"),
        format!("data.train={d}/data/train.json"),
        format!("data.val={d}/data/val.json"),
        format!("shards.dir={d}/shards"),
        format!("model.path={d}/model"),
        format!("demo.warm_start.base_model={root}/tests/fixtures/tiny-gemma3"),
        "demo.train_questions=16".into(),
        "demo.val_questions=2".into(),
        "demo.warm_start.steps=1".into(),
        "training.per_device_train_batch_size=4".into(),
        "training.gradient_accumulation_steps=1".into(),
        "training.num_generations=4".into(),
        "training.max_completion_length=4".into(),
        "training.max_steps=100000".into(),
        "training.logging_steps=1".into(),
        "training.save_steps=100000".into(),
    ]
    .into_iter()
    .flat_map(|o| ["--set".to_string(), o])
    .collect()
}

#[test]
fn ctrl_c_exits_130_and_marks_the_run_and_the_demo_report_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/demo.yaml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_medgrpo"))
        .arg("pipeline")
        .arg(&config)
        .args(demo_overrides(dir.path()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = dir.path().join("run/metrics.jsonl");
    let started = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(true, |t| t.lines().count() < 2) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("pipeline ended before training started: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no training step within 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stderr:\n{stderr}");
    assert!(
        !stderr.lines().any(|l| l.starts_with("done:")),
        "stderr:\n{stderr}"
    );
    assert!(stderr.contains("interrupted"), "stderr:\n{stderr}");

    let marker: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run/interrupted.json")).unwrap(),
    )
    .unwrap();
    let steps = marker["steps_done"].as_u64().unwrap();
    assert!((2..100000).contains(&steps), "{marker}");
    assert!(
        marker["resume"].as_str().unwrap().contains("--resume"),
        "{marker}"
    );
    assert!(
        dir.path()
            .join(format!("run/checkpoint-{steps}"))
            .join("adapter_model.safetensors")
            .exists(),
        "the graceful stop writes a checkpoint"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run/demo_report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["interrupted"], true, "{report}");
    assert_eq!(report["steps_done"].as_u64(), Some(steps), "{report}");
    assert!(report["eval_after"].is_null(), "{report}");
    assert!(report["eval_before"]["accuracy"].is_number(), "{report}");
    let lock = std::fs::read_to_string(dir.path().join("run/medgrpo.lock")).unwrap();
    assert!(lock.is_empty(), "the run lock is released: {lock}");
}

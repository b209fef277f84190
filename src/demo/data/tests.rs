use super::*;

/// Demo data made with other settings (here: an older medgrpo's `extent` questions, with
/// no stamp) is regenerated for the configured task, and the shards built from the old
/// images are removed; data made with the same settings is left alone.
#[test]
fn stale_demo_data_and_its_shards_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut overrides = crate::demo::overrides_under(dir.path());
    overrides.extend([
        "demo.train_questions=4".into(),
        "demo.val_questions=2".into(),
    ]);
    let config =
        Config::from_yaml_str(include_str!("../../../pipelines/demo.yaml"), &overrides).unwrap();
    let data = dir.path().join("data");
    crate::demo::synth::generate_with(
        &data,
        "train",
        4,
        64,
        7,
        crate::config::DemoTask::Extent,
        false,
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("shards")).unwrap();
    std::fs::write(dir.path().join("shards/manifest.json"), "{}").unwrap();
    let question = |split: &str| {
        let t = std::fs::read_to_string(data.join(format!("{split}.json"))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        v.as_object().unwrap().values().next().unwrap()["question"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(question("train").contains("How large"));
    ensure(&config).unwrap();
    assert!(
        question("train").contains("diffuse"),
        "{}",
        question("train")
    );
    assert!(question("val").contains("diffuse"));
    assert!(!dir.path().join("shards").exists());
    let before = std::fs::metadata(data.join("train.json"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::create_dir_all(dir.path().join("shards")).unwrap();
    std::fs::write(dir.path().join("shards/manifest.json"), "{}").unwrap();
    ensure(&config).unwrap();
    assert_eq!(
        std::fs::metadata(data.join("train.json"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    assert!(dir.path().join("shards/manifest.json").exists());
}

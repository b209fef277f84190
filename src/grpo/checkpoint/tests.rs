use super::*;

#[test]
fn save_renames_prunes_and_resolves_latest() {
    let run = tempfile::tempdir().unwrap();
    for step in [10, 20, 30] {
        save(run.path(), step, 2, |d| {
            Ok(std::fs::write(d.join("state.json"), step.to_string())?)
        })
        .unwrap();
    }
    let steps: Vec<u64> = list(run.path()).unwrap().into_iter().map(|x| x.0).collect();
    assert_eq!(steps, [20, 30]);
    let latest = resolve(run.path(), "latest").unwrap();
    assert_eq!(
        std::fs::read_to_string(latest.join("state.json")).unwrap(),
        "30"
    );
}

#[test]
fn a_failed_write_leaves_no_checkpoint_behind() {
    let run = tempfile::tempdir().unwrap();
    save(run.path(), 1, 0, |d| Ok(std::fs::write(d.join("a"), "1")?)).unwrap();
    let err = save(run.path(), 2, 0, |_| anyhow::bail!("disk full")).unwrap_err();
    assert!(format!("{err:#}").contains("disk full"));
    assert_eq!(list(run.path()).unwrap().len(), 1);
    assert_eq!(
        std::fs::read_dir(run.path()).unwrap().count(),
        1,
        "no temporary directory left"
    );
    assert!(
        resolve(run.path(), "latest")
            .unwrap()
            .ends_with("checkpoint-1")
    );
    assert!(resolve(tempfile::tempdir().unwrap().path(), "latest").is_err());
}

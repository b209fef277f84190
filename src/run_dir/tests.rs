use super::*;

fn record(dir: &Path, h: &Holder) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(LOCK_FILE), serde_json::to_vec(h).unwrap()).unwrap();
}

/// While one lock is held, a second acquire of the same directory fails naming the holder;
/// once released, it succeeds.
#[test]
fn a_held_directory_is_refused_naming_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let first = RunLock::acquire(&run).unwrap();
    let e = format!("{:#}", RunLock::acquire(&run).unwrap_err());
    assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
    assert!(e.contains(&host_name()) && e.contains("in use"), "{e}");
    let held: Holder =
        serde_json::from_str(&std::fs::read_to_string(first.path()).unwrap()).unwrap();
    assert!(held.started.ends_with('Z'), "{held:?}");
    drop(first);
    assert_eq!(std::fs::read_to_string(run.join(LOCK_FILE)).unwrap(), "");
    RunLock::acquire(&run).unwrap();
}

/// A record left by a process of this host that has ended (a `kill -9`) is taken over.
#[test]
fn a_stale_lock_of_a_dead_process_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    assert!(!process_alive(dead));
    assert!(process_alive(std::process::id()));
    let old = Holder {
        pid: dead,
        host: host_name(),
        started: "2020-01-01T00:00:00Z".into(),
        command: "medgrpo pipeline x.yaml".into(),
    };
    record(dir.path(), &old);
    let lock = RunLock::acquire(dir.path()).unwrap();
    let now: Holder = serde_json::from_str(&std::fs::read_to_string(lock.path()).unwrap()).unwrap();
    assert_eq!(now.pid, std::process::id());
    // An unreadable record (a crash while writing it) is stale too.
    drop(lock);
    std::fs::write(dir.path().join(LOCK_FILE), "{\"pid\": 1").unwrap();
    RunLock::acquire(dir.path()).unwrap();
}

/// A record naming another host cannot be checked from here: refused with instructions.
#[test]
fn a_lock_of_another_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other = Holder {
        pid: 4242,
        host: "gpu-node-17".into(),
        started: "2030-01-01T00:00:00Z".into(),
        command: "medgrpo pipeline train.yaml".into(),
    };
    record(dir.path(), &other);
    let e = format!("{:#}", RunLock::acquire(dir.path()).unwrap_err());
    assert!(
        e.contains("pid 4242 on host gpu-node-17 since 2030-01-01T00:00:00Z"),
        "{e}"
    );
    assert!(e.contains("delete the file"), "{e}");
}

/// `medgrpo pipeline` takes the lock before any work: a second run on the same output_dir
/// stops at once with the holder named.
#[test]
fn pipeline_refuses_an_output_dir_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let yaml = dir.path().join("p.yaml");
    std::fs::write(
        &yaml,
        format!(
            "output_dir: {}\nmodel: {{path: m}}\ndata: {{train: t.json}}\n",
            run.display()
        ),
    )
    .unwrap();
    let _held = RunLock::acquire(&run).unwrap();
    let e = crate::commands::pipeline::run(crate::commands::pipeline::PipelineArgs {
        config: yaml,
        set: Vec::new(),
        resume: None,
    })
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("is in use by pid"), "{e}");
}

#[test]
fn the_interrupted_marker_is_written_and_cleared() {
    let dir = tempfile::tempdir().unwrap();
    mark_interrupted(dir.path(), Some(12)).unwrap();
    let m: InterruptedRun =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(INTERRUPTED_FILE)).unwrap())
            .unwrap();
    assert_eq!(m.steps_done, 12);
    mark_interrupted(dir.path(), None).unwrap();
    assert!(!dir.path().join(INTERRUPTED_FILE).exists());
    mark_interrupted(dir.path(), None).unwrap();
}

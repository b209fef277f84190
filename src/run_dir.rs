//! What a run directory (`output_dir`) says about the runs that write into it:
//!
//! - **a lock** naming the process that holds it (pid, host, start time), so two `pipeline`
//!   processes never share one directory (both would append to `metrics.jsonl` and write the
//!   same checkpoints). The lock is an OS file lock (`flock`) on `medgrpo.lock`, released by
//!   the kernel however the holder ends, so a run killed with `kill -9` leaves no lock behind:
//!   its record in the file is recognised as stale and replaced. A record naming another host
//!   is refused instead, since file locks are not always shared between machines on network
//!   file systems and a process there cannot be checked from here;
//! - **a marker** (`interrupted.json`) while the last run of the directory was stopped by
//!   Ctrl-C before its planned steps: it names the step reached and how to continue, and the
//!   next run that completes removes it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::clip::clip;

/// The lock file's name inside the run directory.
pub const LOCK_FILE: &str = "medgrpo.lock";
/// The interrupted-run marker's name inside the run directory.
pub const INTERRUPTED_FILE: &str = "interrupted.json";

/// Who holds (or held) a run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// When the holder took the lock (RFC 3339, UTC).
    pub started: String,
    /// The holder's command line.
    pub command: String,
}

impl Holder {
    fn this_process() -> Self {
        Self {
            pid: std::process::id(),
            host: host_name(),
            started: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            command: clip(&std::env::args().collect::<Vec<_>>().join(" ")),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {} since {} (`{}`)",
            self.pid, self.host, self.started, self.command
        )
    }
}

/// A held run directory; dropping it releases the lock (and empties the file, which marks
/// it free for a reader).
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `dir`, creating the directory. Fails, naming the holder, while
    /// another process holds it or when its record names another host; replaces the record
    /// of a process that ended without releasing it (printing a note).
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create run directory {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the run lock {}", path.display()))?;
        let os_lock = match file.try_lock() {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => {
                let who = read_holder(&mut file)
                    .map_or_else(|| "another process".to_string(), |h| h.to_string());
                bail!(
                    "{} is in use by {who}: two runs would write the same metrics and checkpoints; wait for it to end, stop it, or set another output_dir",
                    dir.display()
                );
            }
            // A file system without file locks: the record alone decides.
            Err(TryLockError::Error(_)) => false,
        };
        if let Some(old) = read_holder(&mut file) {
            check_stale(&old, &path, os_lock)?;
            eprintln!(
                "note: {} was left by {old}, which is no longer running; taking it over",
                path.display()
            );
        }
        let me = Holder::this_process();
        write_record(&mut file, &serde_json::to_vec_pretty(&me)?)
            .with_context(|| format!("cannot write the run lock {}", path.display()))?;
        Ok(RunLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // The file stays (deleting a locked file lets a third process lock a new one while a
        // second waits on the old); an empty record means free.
        let _ = write_record(&mut self.file, b"");
        let _ = self.file.unlock();
    }
}

/// Whether the record `old` found in a lock we could take may be replaced: yes for a
/// process of this host that is gone (with a working OS lock, any process of this host is
/// gone, since it would still hold the lock); no for another host's.
fn check_stale(old: &Holder, path: &Path, os_lock: bool) -> Result<()> {
    if old.host != host_name() {
        bail!(
            "{} names {old}, on another machine whose process cannot be checked from here; if no run uses this directory any more, delete the file",
            path.display()
        );
    }
    if !os_lock && old.pid != std::process::id() && process_alive(old.pid) {
        bail!(
            "{} is in use by {old}: two runs would write the same metrics and checkpoints",
            path.display()
        );
    }
    Ok(())
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    if text.trim().is_empty() {
        return None;
    }
    Some(serde_json::from_str(&text).unwrap_or_else(|_| Holder {
        pid: 0,
        host: host_name(),
        started: "an unknown time".into(),
        command: format!("an unreadable lock record ({})", clip(text.trim())),
    }))
}

fn write_record(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(bytes)?;
    file.sync_data()
}

fn host_name() -> String {
    #[cfg(unix)]
    if let Ok(h) = nix::unistd::gethostname()
        && let Some(h) = h.to_str()
    {
        return h.to_string();
    }
    std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Whether process `pid` of this host exists (signal 0 probes without sending anything).
fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = i32::try_from(pid) else {
            return false;
        };
        !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// The marker of a run stopped early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterruptedRun {
    /// Optimizer steps done in total when it stopped (its last checkpoint).
    pub steps_done: u64,
    /// When it stopped (RFC 3339, UTC).
    pub stopped: String,
    /// How to continue.
    pub resume: String,
}

/// Records in `dir` that its run stopped early after `steps_done` steps, or (`None`) removes
/// the marker of an earlier interrupted run once a run has completed.
pub fn mark_interrupted(dir: &Path, steps_done: Option<u64>) -> Result<()> {
    let path = dir.join(INTERRUPTED_FILE);
    let Some(steps_done) = steps_done else {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        };
    };
    let marker = InterruptedRun {
        steps_done,
        stopped: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        resume: "run the same `medgrpo pipeline` command with --resume".into(),
    };
    std::fs::write(&path, serde_json::to_vec_pretty(&marker)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests;

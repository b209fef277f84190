//! Stopping: a graceful stop (stop reading the source, drain, run flush hooks) and an abort
//! (every blocked send or receive wakes at once and the threads exit).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crossbeam_channel::{Receiver, Sender};

/// Shared abort signal: dropping the sender closes `rx`, which wakes every `select!` that
/// listens to it, so no thread can stay blocked after an abort.
pub(crate) struct Abort {
    flag: AtomicBool,
    tx: Mutex<Option<Sender<()>>>,
    pub(crate) rx: Receiver<()>,
}

impl Abort {
    pub(crate) fn new() -> Arc<Self> {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Arc::new(Self {
            flag: AtomicBool::new(false),
            tx: Mutex::new(Some(tx)),
            rx,
        })
    }

    pub(crate) fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

/// Asks a running pipeline to stop gracefully: the source stops producing, items already
/// in flight finish, and every stage's flush hook runs (the learner writes a checkpoint).
#[derive(Clone)]
pub struct StopHandle {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) abort: Arc<Abort>,
}

impl StopHandle {
    /// Graceful stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether a graceful stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Immediate stop: no flush hooks; the last checkpoint stays as it was.
    pub fn abort(&self) {
        self.abort.trigger();
    }
}

/// Exit code of a command stopped by Ctrl-C: 128 + SIGINT, what shells report for a process
/// the signal ended.
pub const INTERRUPTED_EXIT_CODE: i32 = 130;

/// The error of a command that a graceful stop (Ctrl-C) ended before its work was done. What
/// was finished is kept (complete shards, a checkpoint), but the command fails with
/// [`INTERRUPTED_EXIT_CODE`], so a script or a scheduler never takes a partial run for a
/// finished one.
#[derive(Debug)]
pub struct Interrupted(String);

impl Interrupted {
    /// `what` says what was kept and how to continue.
    pub fn new(what: impl Into<String>) -> Self {
        Self(what.into())
    }
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by Ctrl-C: {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// The process exit code of a command's error: [`INTERRUPTED_EXIT_CODE`] when an
/// [`Interrupted`] is anywhere in its chain, else 1.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| c.is::<Interrupted>()) {
        INTERRUPTED_EXIT_CODE
    } else {
        1
    }
}

fn registry() -> &'static Mutex<Vec<Weak<AtomicBool>>> {
    static R: OnceLock<Mutex<Vec<Weak<AtomicBool>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Vec::new()))
}

/// Routes Ctrl-C to `handle`: the first press stops gracefully (the current optimizer step
/// finishes and a checkpoint is written), a second press exits at once with code 130.
pub fn install_ctrlc(handle: &StopHandle) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::downgrade(&handle.stop));
    INSTALLED.get_or_init(|| {
        let pressed = AtomicBool::new(false);
        let result = ctrlc::set_handler(move || {
            if pressed.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond Ctrl-C: exiting now");
                std::process::exit(INTERRUPTED_EXIT_CODE);
            }
            eprintln!(
                "\nCtrl-C: finishing the items in flight, then stopping (press again to exit now)"
            );
            for stop in registry().lock().unwrap_or_else(|e| e.into_inner()).iter() {
                if let Some(s) = stop.upgrade() {
                    s.store(true, Ordering::SeqCst);
                }
            }
        });
        if let Err(e) = result {
            eprintln!("warning: cannot install the Ctrl-C handler: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_command_exits_130_and_others_1() {
        let e = anyhow::Error::new(Interrupted::new("3 steps done")).context("training");
        assert_eq!(exit_code(&e), 130);
        assert!(format!("{e:#}").contains("interrupted by Ctrl-C: 3 steps done"));
        assert_eq!(exit_code(&anyhow::anyhow!("disk full")), 1);
    }
}

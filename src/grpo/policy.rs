//! The weights the sampler generates with, versioned by optimizer step.
//!
//! Why: with `max_staleness: 0` the completions of step `s` must come from the weights after
//! step `s - 1`, exactly as TRL generates with the current model; with `k > 0` sampling may
//! run up to `k` steps ahead. The learner publishes a snapshot after every step; the sampler
//! waits until the version it needs exists. A closed store (the learner ended or the run
//! aborted) wakes every waiter with an error, so a waiting sampler can never hang a run.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};

struct Inner<M> {
    version: u64,
    model: M,
    closed: bool,
}

/// A versioned snapshot shared by the learner (writer) and the sampler (reader).
pub struct PolicyStore<M> {
    inner: Mutex<Inner<M>>,
    changed: Condvar,
}

impl<M: Clone> PolicyStore<M> {
    /// The store with the initial weights as version 0.
    pub fn new(model: M) -> Self {
        Self {
            inner: Mutex::new(Inner {
                version: 0,
                model,
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Publishes the weights after optimizer step `version - 1`.
    pub fn publish(&self, version: u64, model: M) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.version = version;
        g.model = model;
        drop(g);
        self.changed.notify_all();
    }

    /// Wakes every waiter for good: no further version will come.
    pub fn close(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.changed.notify_all();
    }

    /// The newest weights once their version is at least `min_version`, with that version.
    pub fn wait_for(&self, min_version: u64) -> Result<(u64, M)> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while g.version < min_version {
            if g.closed {
                bail!("the learner stopped before publishing the weights of step {min_version}");
            }
            g = self
                .changed
                .wait_timeout(g, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok((g.version, g.model.clone()))
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).version
    }
}

#[cfg(test)]
mod tests;

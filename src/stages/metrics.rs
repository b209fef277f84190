//! Per-stage counters, the end-of-run bottleneck report, and its JSON form.
//!
//! Why: the report is how a user tunes `workers` and `capacity`. A stage busy most of the
//! time with its upstream blocked on send is the bottleneck; a stage mostly blocked on
//! receive is starved by its upstream.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Live counters of one stage, shared by its workers.
#[derive(Default)]
pub(crate) struct StageMetrics {
    pub name: String,
    pub workers: usize,
    pub capacity: usize,
    pub is_source: bool,
    pub items_in: AtomicU64,
    pub items_out: AtomicU64,
    pub skipped: AtomicU64,
    pub filtered: AtomicU64,
    pub busy_ns: AtomicU64,
    pub blocked_recv_ns: AtomicU64,
    pub blocked_send_ns: AtomicU64,
}

impl StageMetrics {
    pub fn new(name: &str, workers: usize, capacity: usize) -> Self {
        Self {
            name: name.to_string(),
            workers,
            capacity,
            ..Default::default()
        }
    }

    pub fn add(counter: &AtomicU64, d: Duration) {
        counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self, elapsed: Duration) -> StageReport {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let per_worker = secs * self.workers.max(1) as f64;
        let frac = |ns: u64| ns as f64 * 1e-9 / per_worker;
        let items_out = load(&self.items_out);
        StageReport {
            name: self.name.clone(),
            workers: self.workers,
            capacity: self.capacity,
            items_in: load(&self.items_in),
            items_out,
            skipped: load(&self.skipped),
            filtered: load(&self.filtered),
            items_per_s: items_out as f64 / secs,
            busy_s: load(&self.busy_ns) as f64 * 1e-9,
            blocked_recv_s: load(&self.blocked_recv_ns) as f64 * 1e-9,
            blocked_send_s: load(&self.blocked_send_ns) as f64 * 1e-9,
            busy_frac: frac(load(&self.busy_ns)),
            blocked_recv_frac: frac(load(&self.blocked_recv_ns)),
            blocked_send_frac: frac(load(&self.blocked_send_ns)),
        }
    }
}

/// Figures of one stage over a run.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Stage name.
    pub name: String,
    /// Worker threads.
    pub workers: usize,
    /// Output channel capacity.
    pub capacity: usize,
    /// Items received (tombstones of skipped upstream items excluded).
    pub items_in: u64,
    /// Items emitted.
    pub items_out: u64,
    /// Items whose processing failed and were skipped.
    pub skipped: u64,
    /// Items the stage dropped on purpose (`Ok(None)`).
    pub filtered: u64,
    /// Output items per second of wall time.
    pub items_per_s: f64,
    /// Seconds spent processing, summed over workers.
    pub busy_s: f64,
    /// Seconds waiting for input (upstream too slow), summed over workers.
    pub blocked_recv_s: f64,
    /// Seconds waiting to send (downstream too slow), summed over workers.
    pub blocked_send_s: f64,
    /// busy_s / (wall × workers).
    pub busy_frac: f64,
    /// blocked_recv_s / (wall × workers).
    pub blocked_recv_frac: f64,
    /// blocked_send_s / (wall × workers).
    pub blocked_send_frac: f64,
}

/// An item dropped because its processing failed, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedItem {
    /// Stage that failed on it.
    pub stage: String,
    /// The item's sequence number in the source.
    pub seq: u64,
    /// Error chain.
    pub reason: String,
}

/// Keeps at most this many skipped items in memory; the count stays exact.
pub(crate) const MAX_SKIPPED_KEPT: usize = 10_000;

#[derive(Default)]
pub(crate) struct SkipLog {
    pub items: Mutex<Vec<SkippedItem>>,
}

impl SkipLog {
    pub fn record(&self, stage: &str, seq: u64, reason: String) {
        let mut v = self.items.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < MAX_SKIPPED_KEPT {
            v.push(SkippedItem {
                stage: stage.to_string(),
                seq,
                reason,
            });
        }
    }
}

/// What a finished run did: per-stage figures, skipped items, the bottleneck.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Wall time of the run in seconds.
    pub elapsed_s: f64,
    /// Stages in chain order (source first, sink last).
    pub stages: Vec<StageReport>,
    /// Skipped items (the first 10,000), in the order they failed.
    pub skipped: Vec<SkippedItem>,
    /// Whether the run ended by a graceful stop (Ctrl-C) rather than the end of input.
    pub stopped_early: bool,
}

impl Report {
    /// Figures of the stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&StageReport> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The stage that limits throughput: the busiest per worker (source and sink included,
    /// since a slow disk or a slow learner is exactly what a user needs to see).
    pub fn bottleneck(&self) -> Option<&StageReport> {
        self.stages
            .iter()
            .max_by(|a, b| a.busy_frac.total_cmp(&b.busy_frac))
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    /// A table of every stage and one line of advice: which stage limits the run, and what
    /// to change in `stages:` about it.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<12} {:>7} {:>8} {:>10} {:>10} {:>7} {:>9} {:>9} {:>8}",
            "stage",
            "workers",
            "capacity",
            "items",
            "items/s",
            "busy",
            "wait-in",
            "wait-out",
            "skipped"
        );
        for st in &self.stages {
            let _ = writeln!(
                s,
                "{:<12} {:>7} {:>8} {:>10} {:>10.1} {:>6.0}% {:>8.0}% {:>8.0}% {:>8}",
                st.name,
                st.workers,
                st.capacity,
                st.items_out,
                st.items_per_s,
                100.0 * st.busy_frac,
                100.0 * st.blocked_recv_frac,
                100.0 * st.blocked_send_frac,
                st.skipped
            );
        }
        if let Some(b) = self.bottleneck() {
            let advice = if b.busy_frac < 0.5 {
                "no stage is busy more than half the time: the run is latency-bound; raise capacities".to_string()
            } else if b.workers == 1 {
                format!(
                    "`{}` is the bottleneck (busy {:.0}% of its one worker): give it more workers if it is thread-safe to do so (stages.{}.workers), or make it cheaper",
                    b.name,
                    100.0 * b.busy_frac,
                    b.name
                )
            } else {
                format!(
                    "`{}` is the bottleneck (busy {:.0}% across {} workers): raise stages.{}.workers while cores or disk bandwidth remain",
                    b.name,
                    100.0 * b.busy_frac,
                    b.workers,
                    b.name
                )
            };
            let _ = writeln!(s, "bottleneck: {advice}");
        }
        if !self.skipped.is_empty() {
            let total: u64 = self.stages.iter().map(|s| s.skipped).sum();
            let _ = writeln!(
                s,
                "skipped {total} item(s); first: item #{} in `{}`: {}",
                self.skipped[0].seq, self.skipped[0].stage, self.skipped[0].reason
            );
        }
        s
    }
}

//! The streaming-stages runtime: a chain of typed stages joined by bounded channels.
//!
//! Why this shape: training is a pipeline whose stages have very different costs (disk,
//! tokenizer, GPU sampling, scoring, learning). Bounded channels give backpressure, so a
//! slow learner stops the sampler instead of filling memory; N workers per stage let an
//! I/O-bound loader keep up; sequence numbers let order-sensitive stages see items exactly
//! in source order, so results never depend on worker counts or timing.
//!
//! ```
//! use medgrpo::stages::{Pipeline, PipelineOptions, StageOptions};
//! let mut p = Pipeline::new(PipelineOptions::quiet());
//! let src = p.source("numbers", 16, (0..100u64).map(Ok));
//! let doubled = p.map("double", StageOptions::new(4, 16), src, |_seq, x: u64| Ok(Some(2 * x)));
//! let mut out = Vec::new();
//! let report = p.run_sink("collect", doubled, |_seq, x| { out.push(x); Ok(()) }).unwrap();
//! assert_eq!(out, (0..100).map(|x| 2 * x).collect::<Vec<_>>());
//! assert_eq!(report.stage("double").unwrap().items_out, 100);
//! ```

mod adaptors;
mod cancel;
mod edge;
mod metrics;
mod pipeline;
mod progress;

pub use adaptors::{EachOf, LastOf};
pub use cancel::{INTERRUPTED_EXIT_CODE, Interrupted, StopHandle, exit_code, install_ctrlc};
pub use metrics::{Report, SkippedItem, StageReport};
pub use pipeline::{Pipeline, PipelineOptions, Port};

/// One step of the chain. The runtime runs `workers` instances of it, one per thread, each
/// built by the factory given to [`Pipeline::stage`].
pub trait Stage: Send + 'static {
    /// What the stage receives.
    type In: Send + 'static;
    /// What the stage emits.
    type Out: Send + 'static;

    /// Handles one item; `seq` is the item's position in the source, stable across runs, so
    /// it can seed per-item randomness. `Ok(None)` drops the item on purpose (a filter).
    /// An error is skipped and recorded, or aborts the run, per the stage's [`ErrorPolicy`];
    /// wrap it in [`Fatal`] to abort whatever the policy.
    fn process(&mut self, seq: u64, item: Self::In) -> anyhow::Result<Option<Self::Out>>;

    /// Flush hook, called once per worker when its input ends (also after a graceful stop
    /// such as Ctrl-C), never after an abort: the place to write a checkpoint or close a file.
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What a stage does with an item whose processing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Drop the item, record stage + item + reason in the report, go on.
    #[default]
    Skip,
    /// Stop the whole pipeline with this error.
    Abort,
}

impl From<crate::config::OnBadItem> for ErrorPolicy {
    fn from(v: crate::config::OnBadItem) -> Self {
        match v {
            crate::config::OnBadItem::Skip => ErrorPolicy::Skip,
            crate::config::OnBadItem::Abort => ErrorPolicy::Abort,
        }
    }
}

/// Per-stage settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageOptions {
    /// Worker threads (each with its own stage instance).
    pub workers: usize,
    /// Items the stage's output channel holds before its workers block.
    pub capacity: usize,
    /// Deliver inputs in sequence order (needs exactly one worker); for stateful stages
    /// such as the advantage and the learner.
    pub ordered: bool,
    /// Skip or abort on a failed item.
    pub on_error: ErrorPolicy,
}

impl StageOptions {
    /// `workers` threads, an output channel of `capacity`, unordered, skip on error.
    pub fn new(workers: usize, capacity: usize) -> Self {
        Self {
            workers,
            capacity,
            ordered: false,
            on_error: ErrorPolicy::Skip,
        }
    }

    /// Same options, with inputs delivered in sequence order.
    pub fn ordered(mut self) -> Self {
        self.ordered = true;
        self
    }

    /// Same options, with the given error policy.
    pub fn on_error(mut self, policy: ErrorPolicy) -> Self {
        self.on_error = policy;
        self
    }
}

impl From<crate::config::StageSettings> for StageOptions {
    fn from(s: crate::config::StageSettings) -> Self {
        StageOptions::new(s.workers, s.capacity)
    }
}

/// An error that aborts the pipeline whatever the stage's [`ErrorPolicy`] (a broken model,
/// a full disk), as opposed to a bad item.
#[derive(Debug)]
pub struct Fatal(pub anyhow::Error);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Fatal {}

/// A stage made from a closure, for stateless steps.
pub struct FnStage<I, O, F> {
    f: F,
    _types: std::marker::PhantomData<fn(I) -> O>,
}

impl<I, O, F> FnStage<I, O, F> {
    /// Wraps `f(seq, item)`.
    pub fn new(f: F) -> Self {
        Self {
            f,
            _types: std::marker::PhantomData,
        }
    }
}

impl<I, O, F> Stage for FnStage<I, O, F>
where
    I: Send + 'static,
    O: Send + 'static,
    F: FnMut(u64, I) -> anyhow::Result<Option<O>> + Send + 'static,
{
    type In = I;
    type Out = O;

    fn process(&mut self, seq: u64, item: I) -> anyhow::Result<Option<O>> {
        (self.f)(seq, item)
    }
}

#[cfg(test)]
mod tests;

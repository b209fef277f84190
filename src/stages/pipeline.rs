//! Building a chain of stages and running it: one thread per worker, the sink on the
//! caller's thread, first error wins, every thread joined before `run_sink` returns.

use std::io::IsTerminal;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::cancel::{Abort, StopHandle};
use super::edge::{Admission, Closed, Input, OrderedReceiver, Packet, send};
use super::metrics::{Report, SkipLog, StageMetrics};
use super::progress::Progress;
use super::{ErrorPolicy, Fatal, FnStage, Stage, StageOptions};
use crate::clip::error_chain;

/// Settings of a whole pipeline run.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Show one live line per stage (indicatif) on stderr.
    pub progress: bool,
    /// A bar of the caller's (training steps, images sharded) drawn above the stage lines,
    /// so one live display shows both the job's progress and where items pile up.
    pub headline: Option<indicatif::ProgressBar>,
}

impl Default for PipelineOptions {
    /// Progress lines when stderr is a terminal.
    fn default() -> Self {
        Self {
            progress: std::io::stderr().is_terminal(),
            headline: None,
        }
    }
}

impl PipelineOptions {
    /// No live display (tests, benchmarks, nested pipelines).
    pub fn quiet() -> Self {
        Self {
            progress: false,
            headline: None,
        }
    }

    /// Same options with `bar` drawn above the stage lines.
    pub fn with_headline(mut self, bar: indicatif::ProgressBar) -> Self {
        self.headline = Some(bar);
        self
    }
}

/// The output of a stage, to be consumed by exactly one next stage or the sink.
pub struct Port<T> {
    rx: Receiver<Packet<T>>,
}

/// State every thread of a run shares.
pub(crate) struct Shared {
    pub abort: Arc<Abort>,
    pub stop: Arc<AtomicBool>,
    pub admission: Arc<Admission>,
    pub skips: SkipLog,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    /// Records the first fatal error and aborts everything; later errors are consequences.
    fn fail(&self, message: String) {
        let mut e = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if e.is_none() && !self.abort.is_set() {
            *e = Some(message);
        }
        drop(e);
        self.abort.trigger();
    }
}

type Launcher = Box<dyn FnOnce(&Arc<Shared>) -> Vec<JoinHandle<()>>>;

/// A chain of stages under construction; nothing runs until [`Pipeline::run_sink`].
pub struct Pipeline {
    options: PipelineOptions,
    shared: Arc<Shared>,
    metrics: Vec<Arc<StageMetrics>>,
    launchers: Vec<Launcher>,
    build_errors: Vec<String>,
}

/// A run that ended with an error, with the figures of the partial run.
#[derive(Debug)]
pub struct RunError {
    /// The first error: which stage, which item, why.
    pub message: String,
    /// What ran before the stop.
    pub report: Report,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RunError {}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

impl Pipeline {
    /// An empty pipeline.
    pub fn new(options: PipelineOptions) -> Self {
        Self {
            options,
            shared: Arc::new(Shared {
                abort: Abort::new(),
                stop: Arc::new(AtomicBool::new(false)),
                admission: Admission::new(),
                skips: SkipLog::default(),
                first_error: Mutex::new(None),
            }),
            metrics: Vec::new(),
            launchers: Vec::new(),
            build_errors: Vec::new(),
        }
    }

    /// A handle that stops this pipeline gracefully or aborts it, from any thread (and the
    /// thing to pass to [`super::install_ctrlc`]).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            stop: self.shared.stop.clone(),
            abort: self.shared.abort.clone(),
        }
    }

    fn add_metrics(
        &mut self,
        name: &str,
        workers: usize,
        capacity: usize,
        is_source: bool,
    ) -> Arc<StageMetrics> {
        if self.metrics.iter().any(|m| m.name == name) {
            self.build_errors.push(format!(
                "two stages are called `{name}`: names must be unique"
            ));
        }
        let mut m = StageMetrics::new(name, workers, capacity);
        m.is_source = is_source;
        let m = Arc::new(m);
        self.metrics.push(m.clone());
        m
    }

    /// The first stage: reads `items` on one thread, numbering them 0, 1, 2, … in order.
    /// An `Err` item is skipped and recorded (its number is kept, so later numbers do not
    /// shift); use [`Pipeline::source_with`] to abort instead.
    pub fn source<T, I>(&mut self, name: &str, capacity: usize, items: I) -> Port<T>
    where
        T: Send + 'static,
        I: IntoIterator<Item = anyhow::Result<T>>,
        I::IntoIter: Send + 'static,
    {
        self.source_with(name, StageOptions::new(1, capacity), items)
    }

    /// [`Pipeline::source`] with an explicit error policy (`workers` and `ordered` are
    /// ignored: a source is one thread, in order by construction).
    pub fn source_with<T, I>(&mut self, name: &str, options: StageOptions, items: I) -> Port<T>
    where
        T: Send + 'static,
        I: IntoIterator<Item = anyhow::Result<T>>,
        I::IntoIter: Send + 'static,
    {
        if self.metrics.iter().any(|m| m.is_source) {
            self.build_errors
                .push("a pipeline has exactly one source".to_string());
        }
        let (tx, rx) = crossbeam_channel::bounded(options.capacity.max(1));
        let metrics = self.add_metrics(name, 1, options.capacity, true);
        let mut iter = items.into_iter();
        let name = name.to_string();
        self.launchers.push(Box::new(move |shared| {
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("medgrpo:{name}"))
                .spawn(move || {
                    let mut seq = 0u64;
                    loop {
                        if shared.abort.is_set() || shared.stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match shared.admission.admit(seq, &shared.abort) {
                            Ok(b) => StageMetrics::add(&metrics.blocked_send_ns, b),
                            Err(_) => break,
                        }
                        let t = Instant::now();
                        let next = catch_unwind(AssertUnwindSafe(|| iter.next()));
                        StageMetrics::add(&metrics.busy_ns, t.elapsed());
                        let item = match next {
                            Ok(None) => break,
                            Ok(Some(Ok(item))) => {
                                metrics.items_out.fetch_add(1, Ordering::Relaxed);
                                Some(item)
                            }
                            Ok(Some(Err(e))) => {
                                let fatal = e.downcast_ref::<Fatal>().is_some();
                                if options.on_error == ErrorPolicy::Abort || fatal {
                                    shared.fail(format!(
                                        "stage `{name}`: item #{seq}: {}",
                                        error_chain(&e)
                                    ));
                                    break;
                                }
                                metrics.skipped.fetch_add(1, Ordering::Relaxed);
                                shared.skips.record(&name, seq, error_chain(&e));
                                None
                            }
                            Err(p) => {
                                shared.fail(format!(
                                    "stage `{name}` panicked reading item #{seq}: {}",
                                    panic_message(p.as_ref())
                                ));
                                break;
                            }
                        };
                        match send(&tx, Packet { seq, item }, &shared.abort) {
                            Ok(b) => StageMetrics::add(&metrics.blocked_send_ns, b),
                            Err(_) => break,
                        }
                        seq += 1;
                    }
                })
                .expect("spawn source thread");
            vec![handle]
        }));
        Port { rx }
    }

    /// A stage of `options.workers` threads, each running its own instance made by
    /// `factory(worker_index)`.
    pub fn stage<S, F>(
        &mut self,
        name: &str,
        options: StageOptions,
        input: Port<S::In>,
        mut factory: F,
    ) -> Port<S::Out>
    where
        S: Stage,
        F: FnMut(usize) -> S,
    {
        let workers = options.workers.max(1);
        if options.workers == 0 {
            self.build_errors
                .push(format!("stage `{name}`: workers must be at least 1"));
        }
        if options.ordered && workers != 1 {
            self.build_errors.push(format!(
                "stage `{name}` sees its items in order, so it needs exactly 1 worker (got {workers})"
            ));
        }
        let (tx, rx) = crossbeam_channel::bounded::<Packet<S::Out>>(options.capacity.max(1));
        let metrics = self.add_metrics(name, workers, options.capacity, false);
        let instances: Vec<S> = (0..workers).map(&mut factory).collect();
        let (mut input_end, arrival_rx) = if options.ordered {
            let ordered = OrderedReceiver::new(input.rx, None);
            (Some(Input::Ordered(ordered)), None)
        } else {
            (None, Some(input.rx))
        };
        let name = name.to_string();
        self.launchers.push(Box::new(move |shared| {
            let mut handles = Vec::with_capacity(workers);
            for (k, stage) in instances.into_iter().enumerate() {
                let input = match input_end.take() {
                    Some(ordered) => ordered,
                    None => Input::Arrival(arrival_rx.clone().expect("arrival receiver")),
                };
                let w = Worker {
                    name: name.clone(),
                    index: k,
                    policy: options.on_error,
                    shared: shared.clone(),
                    metrics: metrics.clone(),
                    tx: tx.clone(),
                };
                handles.push(
                    std::thread::Builder::new()
                        .name(format!("medgrpo:{name}:{k}"))
                        .spawn(move || w.run(stage, input))
                        .expect("spawn stage thread"),
                );
            }
            handles
        }));
        Port { rx }
    }

    /// A stage from a closure `f(seq, item)`, cloned once per worker.
    pub fn map<I, O, F>(
        &mut self,
        name: &str,
        options: StageOptions,
        input: Port<I>,
        f: F,
    ) -> Port<O>
    where
        I: Send + 'static,
        O: Send + 'static,
        F: FnMut(u64, I) -> anyhow::Result<Option<O>> + Clone + Send + 'static,
    {
        self.stage(name, options, input, |_| FnStage::new(f.clone()))
    }

    /// Runs the pipeline, feeding `port`'s items to `sink` on the calling thread in
    /// sequence order. Returns when every thread has ended: after the input is exhausted,
    /// a graceful stop, or the first fatal error (then `Err` names stage, item and reason).
    pub fn run_sink<T, F>(
        mut self,
        name: &str,
        port: Port<T>,
        mut sink: F,
    ) -> Result<Report, RunError>
    where
        T: Send + 'static,
        F: FnMut(u64, T) -> anyhow::Result<()>,
    {
        let metrics = self.add_metrics(name, 1, 0, false);
        let started = Instant::now();
        if !self.build_errors.is_empty() {
            return Err(RunError {
                message: format!("invalid pipeline: {}", self.build_errors.join("; ")),
                report: self.report(started.elapsed()),
            });
        }
        let window: usize = self.metrics.iter().map(|m| m.capacity + m.workers).sum();
        self.shared.admission.set_window(window as u64);
        let mut input = OrderedReceiver::new(port.rx, Some(self.shared.admission.clone()));
        let mut handles = Vec::new();
        for launch in std::mem::take(&mut self.launchers) {
            handles.extend(launch(&self.shared));
        }
        let progress = self
            .options
            .progress
            .then(|| Progress::start(self.metrics.clone(), started, self.options.headline.clone()));
        let shared = self.shared.clone();
        loop {
            let (packet, blocked) = match input.recv(&shared.abort) {
                Ok(x) => x,
                Err(_) => break,
            };
            StageMetrics::add(&metrics.blocked_recv_ns, blocked);
            let Some(item) = packet.item else { continue };
            metrics.items_in.fetch_add(1, Ordering::Relaxed);
            let t = Instant::now();
            let r = catch_unwind(AssertUnwindSafe(|| sink(packet.seq, item)));
            StageMetrics::add(&metrics.busy_ns, t.elapsed());
            match r {
                Ok(Ok(())) => {
                    metrics.items_out.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    shared.fail(format!(
                        "stage `{name}`: item #{}: {}",
                        packet.seq,
                        error_chain(&e)
                    ));
                    break;
                }
                Err(p) => {
                    shared.fail(format!(
                        "stage `{name}` panicked on item #{}: {}",
                        packet.seq,
                        panic_message(p.as_ref())
                    ));
                    break;
                }
            }
        }
        // Whatever ended the loop, no thread may outlive the run: an early exit aborts.
        if shared
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            shared.abort.trigger();
        }
        drop(input);
        for h in handles {
            if let Err(p) = h.join() {
                shared.fail(format!(
                    "a stage thread panicked outside an item: {}",
                    panic_message(p.as_ref())
                ));
            }
        }
        let elapsed = started.elapsed();
        if let Some(p) = progress {
            p.finish();
        }
        let report = self.report(elapsed);
        let first = shared
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match first {
            Some(message) => Err(RunError { message, report }),
            None => Ok(report),
        }
    }

    /// Runs the pipeline and collects `port`'s items in sequence order.
    pub fn run_collect<T: Send + 'static>(
        self,
        name: &str,
        port: Port<T>,
    ) -> Result<(Vec<T>, Report), RunError> {
        let mut out = Vec::new();
        let report = self.run_sink(name, port, |_, x| {
            out.push(x);
            Ok(())
        })?;
        Ok((out, report))
    }

    fn report(&self, elapsed: Duration) -> Report {
        Report {
            elapsed_s: elapsed.as_secs_f64(),
            stages: self.metrics.iter().map(|m| m.snapshot(elapsed)).collect(),
            skipped: self
                .shared
                .skips
                .items
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            stopped_early: self.shared.stop.load(Ordering::Relaxed),
        }
    }
}

/// One worker thread of a stage.
struct Worker<O> {
    name: String,
    index: usize,
    policy: ErrorPolicy,
    shared: Arc<Shared>,
    metrics: Arc<StageMetrics>,
    tx: Sender<Packet<O>>,
}

impl<O: Send + 'static> Worker<O> {
    fn run<S: Stage<Out = O>>(self, mut stage: S, mut input: Input<S::In>) {
        let m = &self.metrics;
        let shared = &self.shared;
        loop {
            let (packet, blocked) = match input.recv(&shared.abort) {
                Ok(x) => x,
                Err(Closed::Disconnected) => break,
                Err(Closed::Aborted) => return,
            };
            StageMetrics::add(&m.blocked_recv_ns, blocked);
            let seq = packet.seq;
            let out = match packet.item {
                None => None,
                Some(item) => {
                    m.items_in.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    let r = catch_unwind(AssertUnwindSafe(|| stage.process(seq, item)));
                    StageMetrics::add(&m.busy_ns, t.elapsed());
                    match r {
                        Ok(Ok(Some(o))) => {
                            m.items_out.fetch_add(1, Ordering::Relaxed);
                            Some(o)
                        }
                        Ok(Ok(None)) => {
                            m.filtered.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Ok(Err(e)) => {
                            if self.policy == ErrorPolicy::Abort
                                || e.downcast_ref::<Fatal>().is_some()
                            {
                                shared.fail(format!(
                                    "stage `{}`: item #{seq}: {}",
                                    self.name,
                                    error_chain(&e)
                                ));
                                return;
                            }
                            m.skipped.fetch_add(1, Ordering::Relaxed);
                            shared.skips.record(&self.name, seq, error_chain(&e));
                            None
                        }
                        Err(p) => {
                            shared.fail(format!(
                                "stage `{}` worker {} panicked on item #{seq}: {}",
                                self.name,
                                self.index,
                                panic_message(p.as_ref())
                            ));
                            return;
                        }
                    }
                }
            };
            match send(&self.tx, Packet { seq, item: out }, &shared.abort) {
                Ok(b) => StageMetrics::add(&m.blocked_send_ns, b),
                Err(Closed::Disconnected) => break,
                Err(Closed::Aborted) => return,
            }
        }
        if shared.abort.is_set() {
            return;
        }
        let t = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| stage.finish())) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => shared.fail(format!("stage `{}`: flush: {}", self.name, error_chain(&e))),
            Err(p) => shared.fail(format!(
                "stage `{}` worker {} panicked in its flush hook: {}",
                self.name,
                self.index,
                panic_message(p.as_ref())
            )),
        }
        StageMetrics::add(&m.busy_ns, t.elapsed());
    }
}

//! Throughput and latency of the runtime itself, so its cost can be compared with the few
//! hundred items/s the real pipeline moves (`medgrpo bench stages`, `cargo bench`).

use std::time::{Duration, Instant};

use crate::stages::{Pipeline, PipelineOptions, StageOptions};

/// Figures of one benchmark run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StagesBench {
    /// Stages between source and sink.
    pub stages: usize,
    /// Channel capacity of every stage.
    pub capacity: usize,
    /// Items pushed through.
    pub items: u64,
    /// Items per second through the whole chain.
    pub items_per_s: f64,
    /// Mean time for one item to cross one channel when the chain is idle, in microseconds.
    pub hop_latency_us: f64,
}

/// Pushes `items` trivial items through `stages` one-worker stages of `capacity`, then
/// measures the unloaded per-hop latency with one item in flight at a time.
pub fn run(stages: usize, capacity: usize, items: u64) -> StagesBench {
    let mut p = Pipeline::new(PipelineOptions::quiet());
    let mut port = p.source("source", capacity, (0..items).map(Ok));
    for i in 0..stages {
        port = p.map(
            &format!("s{i}"),
            StageOptions::new(1, capacity),
            port,
            |_, x: u64| Ok(Some(x.wrapping_add(1))),
        );
    }
    let started = Instant::now();
    let mut sum = 0u64;
    p.run_sink("sink", port, |_, x| {
        sum = sum.wrapping_add(x);
        Ok(())
    })
    .expect("benchmark pipeline runs");
    let elapsed = started.elapsed();
    assert_eq!(sum, (0..items).map(|x| x + stages as u64).sum::<u64>());

    // Latency: the source waits for the sink's acknowledgement before producing the next
    // item, so each item crosses an idle chain.
    let rounds = 2_000u64;
    let (ack_tx, ack_rx) = crossbeam_channel::bounded::<()>(1);
    let mut p = Pipeline::new(PipelineOptions::quiet());
    let mut port = p.source(
        "source",
        capacity,
        (0..rounds).map(move |i| {
            if i > 0 {
                ack_rx.recv().expect("sink acknowledges");
            }
            Ok(Instant::now())
        }),
    );
    for i in 0..stages {
        port = p.map(
            &format!("s{i}"),
            StageOptions::new(1, capacity),
            port,
            |_, t: Instant| Ok(Some(t)),
        );
    }
    let mut total = Duration::ZERO;
    p.run_sink("sink", port, |_, t| {
        total += t.elapsed();
        let _ = ack_tx.try_send(());
        Ok(())
    })
    .expect("latency pipeline runs");
    let hops = (stages + 1) as f64;
    StagesBench {
        stages,
        capacity,
        items,
        items_per_s: items as f64 / elapsed.as_secs_f64(),
        hop_latency_us: total.as_secs_f64() * 1e6 / rounds as f64 / hops,
    }
}

/// Runs the standard configuration (7 stages, capacity 64) and prints the figures.
pub fn print_standard() {
    let b = run(7, 64, 2_000_000);
    println!(
        "stages runtime: {} stages, capacity {}: {:.0} items/s through the chain ({} items), {:.2} µs per hop unloaded",
        b.stages, b.capacity, b.items_per_s, b.items, b.hop_latency_us
    );
    println!("{}", serde_json::to_string(&b).expect("serializes"));
}

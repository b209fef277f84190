use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// Runs `f` on a thread and fails the test if it does not finish in `secs` (a deadlock).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("pipeline did not finish: deadlock or lost wake-up")
}

/// A stage whose work takes a pseudo-random time, to scramble completion order.
fn jitter(seq: u64) {
    let mut r = ChaCha8Rng::seed_from_u64(seq);
    std::thread::sleep(Duration::from_micros(r.random_range(0..300)));
}

fn chain(workers: usize, n: u64) -> Vec<(u64, u64)> {
    let mut p = Pipeline::new(PipelineOptions::quiet());
    let src = p.source("source", 4, (0..n).map(Ok));
    let a = p.map(
        "square",
        StageOptions::new(workers, 4),
        src,
        |seq, x: u64| {
            jitter(seq);
            Ok(Some(x * x))
        },
    );
    // Derived randomness: a generator seeded from (seed, seq, purpose), never shared.
    let b = p.map("noise", StageOptions::new(workers, 4), a, |seq, x: u64| {
        jitter(seq + 7);
        let mut r = ChaCha8Rng::seed_from_u64(42 ^ (seq << 8) ^ 3);
        Ok(Some((x, r.random::<u64>() % 1000)))
    });
    let (out, report) = p.run_collect("sink", b).unwrap();
    assert_eq!(report.stage("square").unwrap().items_out, n);
    out
}

#[test]
fn order_is_preserved_with_1_and_8_workers_and_results_are_identical() {
    let one = within(60, || chain(1, 300));
    let eight = within(60, || chain(8, 300));
    assert_eq!(
        one.iter().map(|x| x.0).collect::<Vec<_>>(),
        (0..300u64).map(|x| x * x).collect::<Vec<_>>()
    );
    assert_eq!(one, eight);
}

#[test]
fn ordered_stage_sees_items_in_sequence_order() {
    let seen = within(60, || {
        let mut p = Pipeline::new(PipelineOptions::quiet());
        let src = p.source("source", 2, (0..200u64).map(Ok));
        let a = p.map("scramble", StageOptions::new(6, 2), src, |seq, x: u64| {
            jitter(seq);
            Ok(Some(x))
        });
        let mut last = None;
        let b = p.map(
            "ordered",
            StageOptions::new(1, 2).ordered(),
            a,
            move |seq, x: u64| {
                assert!(
                    last.is_none_or(|l| l + 1 == seq),
                    "out of order: {last:?} then {seq}"
                );
                last = Some(seq);
                Ok(Some(x))
            },
        );
        p.run_collect("sink", b).unwrap().0
    });
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
}

#[test]
fn slow_sink_bounds_items_in_flight() {
    let (capacities, workers) = ([3usize, 5, 2], [1usize, 4, 2]);
    let in_flight = Arc::new(AtomicI64::new(0));
    let peak = Arc::new(AtomicI64::new(0));
    let (f, pk) = (in_flight.clone(), peak.clone());
    within(60, move || {
        let mut p = Pipeline::new(PipelineOptions::quiet());
        let counter = f.clone();
        let peak_seen = pk.clone();
        let src = p.source(
            "source",
            capacities[0],
            (0..400u64).map(move |x| {
                let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
                peak_seen.fetch_max(now, Ordering::SeqCst);
                Ok(x)
            }),
        );
        let a = p.map(
            "a",
            StageOptions::new(workers[1], capacities[1]),
            src,
            |_, x: u64| Ok(Some(x)),
        );
        let b = p.map(
            "b",
            StageOptions::new(workers[2], capacities[2]),
            a,
            |_, x: u64| Ok(Some(x)),
        );
        p.run_sink("sink", b, move |_, _| {
            std::thread::sleep(Duration::from_micros(500));
            f.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
    });
    // Channels hold at most their capacities; each worker (source and sink included) holds
    // at most one item, plus the one the source just produced before it could send.
    let bound = capacities.iter().sum::<usize>() + workers.iter().sum::<usize>() + 2;
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        peak as usize <= bound,
        "peak in flight {peak} > bound {bound}"
    );
    assert!(
        peak >= 5,
        "the sink was slow, so items should have piled up (peak {peak})"
    );
}

#[test]
fn errors_abort_with_the_stage_name_and_item() {
    let err = within(30, || {
        let mut p = Pipeline::new(PipelineOptions::quiet());
        let src = p.source("source", 2, (0..1_000_000u64).map(Ok));
        let a = p.map(
            "parse",
            StageOptions::new(3, 2).on_error(ErrorPolicy::Abort),
            src,
            |_, x: u64| {
                if x == 37 {
                    anyhow::bail!("record 37 is malformed")
                }
                Ok(Some(x))
            },
        );
        let b = p.map("after", StageOptions::new(2, 2), a, |_, x: u64| Ok(Some(x)));
        p.run_collect("sink", b).unwrap_err()
    });
    assert!(err.message.contains("stage `parse`"), "{}", err.message);
    assert!(
        err.message.contains("item #37") && err.message.contains("malformed"),
        "{}",
        err.message
    );
    assert!(err.report.stage("source").unwrap().items_out < 1_000_000);
}

#[test]
fn skip_policy_records_and_continues_in_order() {
    let (out, report) = within(30, || {
        let mut p = Pipeline::new(PipelineOptions::quiet());
        let src = p.source(
            "source",
            2,
            (0..50u64).map(|x| {
                if x == 3 {
                    Err(anyhow::anyhow!("unreadable line"))
                } else {
                    Ok(x)
                }
            }),
        );
        let a = p.map("parse", StageOptions::new(4, 2), src, |seq, x: u64| {
            jitter(seq);
            match x {
                10 | 20 => anyhow::bail!("bad value {x}"),
                30 => Ok(None),
                _ => Ok(Some(x)),
            }
        });
        p.run_collect("sink", a).unwrap()
    });
    let expected: Vec<u64> = (0..50).filter(|x| ![3, 10, 20, 30].contains(x)).collect();
    assert_eq!(out, expected);
    let mut skipped: Vec<(String, u64)> = report
        .skipped
        .iter()
        .map(|s| (s.stage.clone(), s.seq))
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            ("parse".into(), 10),
            ("parse".into(), 20),
            ("source".into(), 3)
        ]
    );
    assert_eq!(report.stage("parse").unwrap().filtered, 1);
    assert!(report.render().contains("skipped 3 item(s)"));
}

#[test]
fn fatal_errors_abort_even_under_skip() {
    let err = within(30, || {
        let mut p = Pipeline::new(PipelineOptions::quiet());
        let src = p.source("source", 2, (0..100u64).map(Ok));
        let a = p.map("gpu", StageOptions::new(1, 2), src, |_, x: u64| {
            if x == 5 {
                return Err(Fatal(anyhow::anyhow!("device lost")).into());
            }
            Ok(Some(x))
        });
        p.run_collect("sink", a).unwrap_err()
    });
    assert!(
        err.message.contains("stage `gpu`") && err.message.contains("device lost"),
        "{}",
        err.message
    );
}

#[test]
fn panics_stop_the_pipeline_and_name_stage_and_item() {
    let err = within(30, || {
        let mut p = Pipeline::new(PipelineOptions::quiet());
        let src = p.source("source", 2, (0..1_000_000u64).map(Ok));
        let a = p.map("decode", StageOptions::new(4, 2), src, |_, x: u64| {
            if x == 11 {
                panic!("corrupt header");
            }
            Ok(Some(x))
        });
        p.run_collect("sink", a).unwrap_err()
    });
    assert!(err.message.contains("stage `decode`"), "{}", err.message);
    assert!(
        err.message.contains("item #11") && err.message.contains("corrupt header"),
        "{}",
        err.message
    );
}

#[test]
fn sink_errors_stop_upstream_stages_blocked_on_full_channels() {
    let err = within(30, || {
        let mut p = Pipeline::new(PipelineOptions::quiet());
        let src = p.source("source", 1, (0..u64::MAX).map(Ok));
        let a = p.map("a", StageOptions::new(2, 1), src, |_, x: u64| Ok(Some(x)));
        p.run_sink("learner", a, |seq, _| {
            if seq == 3 {
                anyhow::bail!("loss is NaN")
            }
            Ok(())
        })
        .unwrap_err()
    });
    assert!(
        err.message
            .contains("stage `learner`: item #3: loss is NaN"),
        "{}",
        err.message
    );
}

struct Flushing {
    flushed: Arc<AtomicUsize>,
}

impl Stage for Flushing {
    type In = u64;
    type Out = u64;
    fn process(&mut self, _: u64, x: u64) -> anyhow::Result<Option<u64>> {
        Ok(Some(x))
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        self.flushed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .filter(|c| c.starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn graceful_stop_drains_flushes_and_ends_all_threads() {
    let flushed = Arc::new(AtomicUsize::new(0));
    let fl = flushed.clone();
    let report = within(30, move || {
        let mut p = Pipeline::new(PipelineOptions::quiet());
        let stop = p.stop_handle();
        let src = p.source("cx1src", 4, (0..u64::MAX).map(Ok));
        let a = p.stage("cx1stage", StageOptions::new(3, 4), src, |_| Flushing {
            flushed: fl.clone(),
        });
        let mut got = 0u64;
        p.run_sink("cx1sink", a, move |seq, _| {
            assert_eq!(
                seq, got,
                "a graceful stop must not lose items in the middle"
            );
            got += 1;
            if got == 100 {
                stop.stop();
            }
            Ok(())
        })
        .unwrap()
    });
    assert!(report.stopped_early);
    assert_eq!(
        flushed.load(Ordering::SeqCst),
        3,
        "every worker's flush hook runs"
    );
    assert_eq!(threads_named("medgrpo:cx1"), 0);
}

#[test]
fn abort_skips_flush_hooks_and_ends_all_threads() {
    let flushed = Arc::new(AtomicUsize::new(0));
    let fl = flushed.clone();
    let started = Arc::new(AtomicBool::new(false));
    let st = started.clone();
    let err = within(30, move || {
        let mut p = Pipeline::new(PipelineOptions::quiet());
        let handle = p.stop_handle();
        let src = p.source("cx2src", 4, (0..u64::MAX).map(Ok));
        let a = p.stage("cx2stage", StageOptions::new(3, 4), src, |_| Flushing {
            flushed: fl.clone(),
        });
        let b = p.map("cx2slow", StageOptions::new(1, 1), a, |_, x: u64| {
            std::thread::sleep(Duration::from_millis(1));
            Ok(Some(x))
        });
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            handle.abort();
        });
        let flag = started.clone();
        p.run_sink("cx2sink", b, move |_, _| {
            flag.store(true, Ordering::SeqCst);
            Ok(())
        })
    });
    // An abort from outside is not an error of any stage: the run ends cleanly.
    let report = err.expect("an external abort ends the run without a stage error");
    assert!(report.stage("cx2sink").unwrap().items_out >= 1);
    assert_eq!(flushed.load(Ordering::SeqCst), 0, "no flush after an abort");
    assert_eq!(threads_named("medgrpo:cx2"), 0);
}

#[test]
fn ordered_stage_with_many_workers_is_a_build_error() {
    let mut p = Pipeline::new(PipelineOptions::quiet());
    let src = p.source("source", 2, (0..3u64).map(Ok));
    let a = p.map(
        "learner",
        StageOptions::new(2, 2).ordered(),
        src,
        |_, x: u64| Ok(Some(x)),
    );
    let err = p.run_collect("sink", a).unwrap_err();
    assert!(
        err.message.contains("stage `learner`") && err.message.contains("exactly 1 worker"),
        "{}",
        err.message
    );
}

#[test]
fn report_names_the_bottleneck_and_serializes() {
    let mut p = Pipeline::new(PipelineOptions::quiet());
    let src = p.source("source", 4, (0..40u64).map(Ok));
    let a = p.map("fast", StageOptions::new(2, 4), src, |_, x: u64| {
        Ok(Some(x))
    });
    let b = p.map("slow", StageOptions::new(1, 4), a, |_, x: u64| {
        std::thread::sleep(Duration::from_millis(2));
        Ok(Some(x))
    });
    let (_, report) = p.run_collect("sink", b).unwrap();
    assert_eq!(report.bottleneck().unwrap().name, "slow");
    assert!(
        report.render().contains("`slow` is the bottleneck"),
        "{}",
        report.render()
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["stages"][2]["name"], "slow");
    assert_eq!(json["stages"][2]["items_out"], 40);
}

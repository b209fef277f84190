//! The live view: one indicatif line per stage, refreshed a few times a second from the
//! shared counters, so a user sees where items pile up while the run goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::metrics::StageMetrics;

/// A running display; [`Progress::finish`] stops and clears it.
pub(crate) struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(
        metrics: Vec<Arc<StageMetrics>>,
        started: Instant,
        headline: Option<ProgressBar>,
    ) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::Builder::new()
            .name("medgrpo:progress".into())
            .spawn(move || {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
                let headline = headline.map(|h| multi.add(h));
                let style = ProgressStyle::with_template("{prefix:>12} {msg}").expect("valid template");
                let bars: Vec<ProgressBar> = metrics
                    .iter()
                    .map(|m| {
                        let b = multi.add(ProgressBar::new_spinner());
                        b.set_style(style.clone());
                        b.set_prefix(m.name.clone());
                        b
                    })
                    .collect();
                while !flag.load(Ordering::Relaxed) {
                    let elapsed = started.elapsed();
                    for (m, b) in metrics.iter().zip(&bars) {
                        let r = m.snapshot(elapsed);
                        b.set_message(format!(
                            "×{:<2} {:>9} items {:>9.1}/s  busy {:>3.0}%  wait-in {:>3.0}%  wait-out {:>3.0}%{}",
                            r.workers,
                            r.items_out,
                            r.items_per_s,
                            100.0 * r.busy_frac,
                            100.0 * r.blocked_recv_frac,
                            100.0 * r.blocked_send_frac,
                            if r.skipped > 0 { format!("  skipped {}", r.skipped) } else { String::new() }
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                for b in bars {
                    b.finish_and_clear();
                }
                if let Some(h) = headline {
                    h.finish();
                }
                let _ = multi.clear();
            })
            .expect("spawn progress thread");
        Self {
            done,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! What a training run shows and writes as it goes: the headline progress bar (reward,
//! accuracy, loss, ETA), `metrics.jsonl` (TRL's metric names, every `logging_steps` and the last
//! step), a plain line per logged step when there is no terminal, and the steps' logs for the
//! summary.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::messages::StepLog;

/// The training chain's sink.
pub struct RunLog {
    headline: ProgressBar,
    metrics: File,
    logging_steps: u64,
    total_steps: u64,
    progress: bool,
    /// Every step's log, in order.
    pub logs: Vec<StepLog>,
}

/// The headline bar of a run of `total_steps`, at `start_step`.
pub fn headline(total_steps: u64, start_step: u64) -> ProgressBar {
    let bar = ProgressBar::new(total_steps);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] step {pos}/{len}  {msg}  ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix("train");
    bar.set_position(start_step);
    bar
}

impl RunLog {
    /// Appends to `run_dir/metrics.jsonl` (a resumed run continues the file); prints a line
    /// per logged step when `progress` is off.
    pub fn open(
        run_dir: &Path,
        headline: ProgressBar,
        logging_steps: usize,
        total_steps: u64,
        progress: bool,
    ) -> Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        let metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self {
            headline,
            metrics,
            logging_steps: logging_steps as u64,
            total_steps,
            progress,
            logs: Vec::new(),
        })
    }

    /// Shows and records one step.
    pub fn record(&mut self, log: StepLog) -> Result<()> {
        self.headline.set_position(log.step);
        let get = |k: &str| log.metrics.get(k).copied().unwrap_or(f64::NAN);
        let summary = format!(
            "reward {:.3}  accuracy {:.0}%  loss {:+.4}",
            get("reward"),
            100.0 * get("rewards/correct/mean"),
            get("loss")
        );
        self.headline.set_message(summary.clone());
        if log.step.is_multiple_of(self.logging_steps) || log.step == self.total_steps {
            let mut line = serde_json::Map::new();
            line.insert("step".into(), log.step.into());
            for (k, v) in &log.metrics {
                line.insert(k.clone(), serde_json::json!(v));
            }
            writeln!(self.metrics, "{}", serde_json::Value::Object(line))?;
            if !self.progress {
                let summary = summary.replace("  ", " ");
                eprintln!("step {}/{}: {summary}", log.step, self.total_steps);
            }
        }
        self.logs.push(log);
        Ok(())
    }

    /// Closes the headline bar; returns the steps' logs.
    pub fn finish(self) -> Vec<StepLog> {
        self.headline.finish();
        self.logs
    }
}

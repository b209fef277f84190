//! The demo's proof that GRPO learned: greedy accuracy on the validation split of the starting
//! model and of the trained adapter, side by side, with the training trend, written to
//! `demo_report.json` (predictions in `eval-before.jsonl` / `eval-after.jsonl`).

use std::path::Path;

use anyhow::Result;
use burn::prelude::Backend;

use crate::config::Config;
use crate::grpo::checkpoint;
use crate::grpo::eval::{EvalOptions, EvalReport, Split, compare, evaluate};
use crate::grpo::train::TrainSummary;
use crate::grpo::trend::TrendRow;
use crate::lora::load::inference_model;

/// Whether `config` is a demo with a validation split to evaluate before and after.
pub fn wanted(config: &Config) -> bool {
    config.demo.is_some() && config.data.val.is_some()
}

fn options(config: &Config, name: &str, progress: bool) -> EvalOptions {
    EvalOptions {
        split: Split::Val,
        progress,
        predictions: Some(Path::new(&config.output_dir).join(format!("eval-{name}.jsonl"))),
        ..Default::default()
    }
}

/// The starting model's evaluation on the validation split.
pub fn before<B: Backend>(
    config: &Config,
    device: &B::Device,
    progress: bool,
) -> Result<EvalReport> {
    eprintln!("demo: evaluating the starting model on the validation split");
    let model = inference_model::<B>(config, None, device)?;
    evaluate(config, &model, &options(config, "before", progress))
}

/// Evaluates the run's last checkpoint, prints it against `before`, and writes
/// `demo_report.json` with both and the training trend `rows`. A run stopped by Ctrl-C is
/// not evaluated (the user asked to stop): its report says `"interrupted": true`.
pub fn after<B: Backend>(
    config: &Config,
    device: &B::Device,
    progress: bool,
    before: &EvalReport,
    summary: &TrainSummary,
    rows: &[TrendRow],
) -> Result<()> {
    let interrupted = summary.report.stopped_early;
    let after = if interrupted {
        None
    } else {
        let last = checkpoint::resolve(&summary.run_dir, "latest")?;
        eprintln!(
            "demo: evaluating {} on the validation split",
            last.display()
        );
        let model = inference_model::<B>(config, Some(&last), device)?;
        let after = evaluate(config, &model, &options(config, "after", progress))?;
        eprintln!(
            "validation, greedy: starting model vs trained adapter\n{}",
            compare(before, &after)
        );
        Some(after)
    };
    let report = serde_json::json!({
        "interrupted": interrupted,
        "steps_done": summary.steps,
        "eval_before": before.to_json(),
        "eval_after": after.map(|a| a.to_json()),
        "trend": rows.iter().map(|r| serde_json::json!({
            "metric": r.metric, "first_fifth": r.first, "last_fifth": r.last,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        summary.run_dir.join("demo_report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}

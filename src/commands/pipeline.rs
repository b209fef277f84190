//! `medgrpo pipeline`: runs the training chain described by a YAML file.

use std::path::PathBuf;

use anyhow::Result;
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;

use crate::config::Config;
use crate::demo;
use crate::device::{OnBackend, run_on as run_on_device};
use crate::grpo::train::train;
use crate::grpo::trend::{render as render_trend, trend};

/// Arguments of `medgrpo pipeline`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  medgrpo pipeline pipelines/demo.yaml\n  medgrpo pipeline pipelines/train.yaml --set training.learning_rate=1e-5 --set stages.loader.workers=8\n  medgrpo pipeline pipelines/train.yaml --resume            # newest checkpoint of output_dir\n  medgrpo pipeline pipelines/train.yaml --resume runs/x/checkpoint-200"
)]
pub struct PipelineArgs {
    /// Pipeline YAML file.
    pub config: PathBuf,
    /// Override any value: `--set training.num_generations=8` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from the latest checkpoint of the run directory, or from the one given.
    #[arg(long, num_args = 0..=1, default_missing_value = "latest")]
    pub resume: Option<String>,
}

/// Validates the configuration, prepares data, shards and (demo) the warm-started model, then
/// trains on the configured device.
pub fn run(args: PipelineArgs) -> Result<()> {
    let config = Config::load(&args.config, &args.set)?;
    let _lock = crate::run_dir::RunLock::acquire(std::path::Path::new(&config.output_dir))?;
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if config.training.gradient_checkpointing {
        eprintln!(
            "warning: training.gradient_checkpointing is not implemented yet: the loss forward keeps its activations (memory as with false)"
        );
    }
    if let Some(w) = config.model.dtype_warning() {
        eprintln!("{w}");
    }
    demo::data::ensure(&config)?;
    crate::data::shard::auto::ensure(&config, &args.config, progress)?;
    demo::warm_start::ensure(&config)?;
    let device = config.model.device;
    run_on_device(
        device,
        Train {
            config,
            resume: args.resume,
            progress,
        },
    )
}

/// The training run, on the backend `model.device` names.
struct Train {
    config: Config,
    resume: Option<String>,
    progress: bool,
}

impl OnBackend for Train {
    type Output = ();
    fn run<B: Backend>(self) -> Result<()> {
        run_on::<burn::backend::Autodiff<B>>(
            &self.config,
            &Default::default(),
            self.resume.as_deref(),
            self.progress,
        )
    }
}

/// Trains on backend `AB` and prints the runtime's report and the training trend; for the
/// demo, also evaluates the validation split before and after ([`crate::demo::report`]).
pub fn run_on<AB: AutodiffBackend>(
    config: &Config,
    device: &AB::Device,
    resume: Option<&str>,
    progress: bool,
) -> Result<()> {
    let before = demo::report::wanted(config)
        .then(|| demo::report::before::<AB::InnerBackend>(config, device, progress))
        .transpose()?;
    let summary = train::<AB>(config, device, resume, progress)?;
    let interrupted = summary.report.stopped_early;
    crate::run_dir::mark_interrupted(&summary.run_dir, interrupted.then_some(summary.steps))?;
    eprintln!("{}", summary.report.render());
    let rows = trend(&summary.logs);
    if !rows.is_empty() {
        eprintln!("{}", render_trend(&rows, summary.logs.len()));
    }
    if let Some(before) = before {
        demo::report::after::<AB::InnerBackend>(
            config, device, progress, &before, &summary, &rows,
        )?;
    }
    if interrupted {
        return Err(crate::stages::Interrupted::new(format!(
            "stopped after {} optimizer steps, checkpoint written in {}; continue with --resume",
            summary.steps,
            summary.run_dir.display()
        ))
        .into());
    }
    eprintln!(
        "done: {} optimizer steps; metrics in {}, checkpoints in {}",
        summary.steps,
        summary.run_dir.join("metrics.jsonl").display(),
        summary.run_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests;

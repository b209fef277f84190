//! `medgrpo pipeline`: runs the training chain described by a YAML file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::config::{Config, Device};

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

/// Makes the demo's synthetic data when the config asks for it and it is missing.
pub fn ensure_demo_data(config: &Config) -> Result<()> {
    let Some(demo) = &config.demo else {
        return Ok(());
    };
    for (path, n, split) in [
        (
            Some(config.data.train.as_str()),
            demo.train_questions,
            "train",
        ),
        (config.data.val.as_deref(), demo.val_questions, "val"),
    ] {
        let Some(path) = path else { continue };
        let path = Path::new(path);
        if path.exists() {
            continue;
        }
        let dir = path.parent().context("demo data path has no directory")?;
        let want = format!("{split}.json");
        if path.file_name().and_then(|f| f.to_str()) != Some(want.as_str()) {
            bail!(
                "demo data for the {split} split must be called {want} (got {})",
                path.display()
            );
        }
        eprintln!(
            "demo: generating {n} synthetic {split} questions in {}",
            dir.display()
        );
        crate::demo::synth::generate(dir, split, n, demo.image_size, config.seed)?;
    }
    Ok(())
}

/// Validates the configuration, then trains on the configured device.
pub fn run(args: PipelineArgs) -> Result<()> {
    let config = Config::load(&args.config, &args.set)?;
    ensure_demo_data(&config)?;
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let summary = match config.model.device {
        Device::Cpu => {
            type AB = burn::backend::Autodiff<burn::backend::Flex>;
            crate::grpo::train::train::<AB>(
                &config,
                &Default::default(),
                args.resume.as_deref(),
                progress,
            )?
        }
        Device::Cuda => run_cuda(&config, args.resume.as_deref(), progress)?,
    };
    eprintln!("{}", summary.report.render());
    eprintln!(
        "done: {} optimizer steps; metrics in {}, checkpoints in {}",
        summary.steps,
        summary.run_dir.join("metrics.jsonl").display(),
        summary.run_dir.display()
    );
    Ok(())
}

#[cfg(feature = "cuda")]
fn run_cuda(
    config: &Config,
    resume: Option<&str>,
    progress: bool,
) -> Result<crate::grpo::train::TrainSummary> {
    type AB = burn::backend::Autodiff<burn::backend::Cuda>;
    crate::grpo::train::train::<AB>(config, &Default::default(), resume, progress)
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(_: &Config, _: Option<&str>, _: bool) -> Result<crate::grpo::train::TrainSummary> {
    bail!(
        "model.device is cuda but this binary was built without CUDA: rebuild with `cargo build --release --features cuda`, or set model.device: cpu"
    )
}

//! `medgrpo pipeline`: runs the training chain described by a YAML file.

use std::path::PathBuf;

use clap::Args;

use crate::config::Config;

/// Arguments of `medgrpo pipeline`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  medgrpo pipeline pipelines/demo.yaml\n  medgrpo pipeline pipelines/train.yaml --set training.learning_rate=1e-5 --set stages.loader.workers=8"
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

/// Validates the configuration, then runs the pipeline.
pub fn run(args: PipelineArgs) -> anyhow::Result<()> {
    let _config = Config::load(&args.config, &args.set)?;
    Err(super::not_landed(
        "pipeline",
        "issue #7 (GRPO learner and pipeline)",
    ))
}

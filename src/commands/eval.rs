//! `medgrpo eval`: accuracy, format rate and reward components per split.

use clap::Args;

/// Arguments of `medgrpo eval`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  medgrpo eval pipelines/train.yaml --split test --adapter runs/x/checkpoint-500"
)]
pub struct EvalArgs {
    /// Anything; this subcommand is not built yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

/// Runs the subcommand.
pub fn run(_args: EvalArgs) -> anyhow::Result<()> {
    Err(super::not_landed(
        "eval",
        "issue #7 (GRPO learner and pipeline)",
    ))
}

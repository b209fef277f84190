//! `medgrpo logprobs`: teacher-forced completion log-probs, for parity checks.

use clap::Args;

/// Arguments of `medgrpo logprobs`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  medgrpo logprobs --model DIR --prompt 'Hi' --completion-ids 17,42 --json"
)]
pub struct LogprobsArgs {
    /// Anything; this subcommand is not built yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

/// Runs the subcommand.
pub fn run(_args: LogprobsArgs) -> anyhow::Result<()> {
    Err(super::not_landed("logprobs", "issue #4 (Gemma 3 model)"))
}

//! `medgrpo reward`: scores completions with exactly the training reward.

use clap::Args;

/// Arguments of `medgrpo reward`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  medgrpo reward --data test.json --completions out.jsonl")]
pub struct RewardArgs {
    /// Anything; this subcommand is not built yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

/// Runs the subcommand.
pub fn run(_args: RewardArgs) -> anyhow::Result<()> {
    Err(super::not_landed(
        "reward",
        "issue #6 (rewards and advantages)",
    ))
}

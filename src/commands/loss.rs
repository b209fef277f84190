//! `medgrpo loss`: the GRPO loss of one group, for checking against TRL.

use clap::Args;

/// Arguments of `medgrpo loss`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  medgrpo loss --model DIR --adapter DIR --group group.json --json"
)]
pub struct LossArgs {
    /// Anything; this subcommand is not built yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

/// Runs the subcommand.
pub fn run(_args: LossArgs) -> anyhow::Result<()> {
    Err(super::not_landed("loss", "issue #7 (GRPO learner)"))
}

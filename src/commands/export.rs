//! `medgrpo export`: writes PEFT adapters or merged dense weights.

use clap::Args;

/// Arguments of `medgrpo export`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  medgrpo export --adapter runs/x/checkpoint-500 --merge --out merged/"
)]
pub struct ExportArgs {
    /// Anything; this subcommand is not built yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

/// Runs the subcommand.
pub fn run(_args: ExportArgs) -> anyhow::Result<()> {
    Err(super::not_landed("export", "issue #5 (NF4 and LoRA)"))
}

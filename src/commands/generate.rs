//! `medgrpo generate`: sampling from the model with a shared-prefix KV cache.

use clap::Args;

/// Arguments of `medgrpo generate`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  medgrpo generate --model DIR --image cxr.png --prompt 'Is there an effusion?' --json"
)]
pub struct GenerateArgs {
    /// Anything; this subcommand is not built yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

/// Runs the subcommand.
pub fn run(_args: GenerateArgs) -> anyhow::Result<()> {
    Err(super::not_landed("generate", "issue #4 (Gemma 3 model)"))
}

//! `medgrpo shard`: precomputes 8-bit image records into shards.

use clap::Args;

/// Arguments of `medgrpo shard`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  medgrpo shard pipelines/train.yaml --workers 8")]
pub struct ShardArgs {
    /// Anything; this subcommand is not built yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

/// Runs the subcommand.
pub fn run(_args: ShardArgs) -> anyhow::Result<()> {
    Err(super::not_landed("shard", "issue #3 (data path)"))
}

//! `medgrpo inspect`: what is in a shard directory or a model checkpoint.

use clap::{Args, Subcommand};

/// Arguments of `medgrpo inspect`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  medgrpo inspect shards shards/medgemma-896 --key deid_png/p1/s1/img.png --png out.png\n  medgrpo inspect model /models/medgemma-4b-it --quant nf4 --double-quant"
)]
pub struct InspectArgs {
    #[command(subcommand)]
    pub what: InspectWhat,
}

/// What to inspect.
#[derive(Debug, Subcommand)]
pub enum InspectWhat {
    /// Counts, settings, failures and disk use of a shard directory.
    Shards(ShardsArgs),
    /// Parameter counts and memory per component of a checkpoint.
    Model(ModelArgs),
}

/// Arguments of `medgrpo inspect shards` (filled in by the data path).
#[derive(Debug, Args)]
pub struct ShardsArgs {
    /// Anything; not built yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

/// Arguments of `medgrpo inspect model` (filled in by NF4 and LoRA).
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Anything; not built yet.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

/// Runs the inspection.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    match args.what {
        InspectWhat::Shards(_) => Err(super::not_landed("inspect shards", "issue #3 (data path)")),
        InspectWhat::Model(_) => Err(super::not_landed(
            "inspect model",
            "issue #5 (NF4 and LoRA)",
        )),
    }
}

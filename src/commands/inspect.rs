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

/// Arguments of `medgrpo inspect shards`.
#[derive(Debug, Args)]
pub struct ShardsArgs {
    /// Shard directory (the `shards.dir` of a config).
    pub dir: std::path::PathBuf,
    /// Image key of one record to export (with `--png`).
    #[arg(long, requires = "png")]
    pub key: Option<String>,
    /// Write the record of `--key` to this PNG exactly as stored.
    #[arg(long, requires = "key")]
    pub png: Option<std::path::PathBuf>,
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
        InspectWhat::Shards(a) => {
            print!("{}", crate::data::inspect::describe(&a.dir)?);
            if let (Some(key), Some(png)) = (a.key, a.png) {
                crate::data::inspect::export_png(&a.dir, &key, &png)?;
                println!("wrote {key} to {}", png.display());
            }
            Ok(())
        }
        InspectWhat::Model(_) => Err(super::not_landed(
            "inspect model",
            "issue #5 (NF4 and LoRA)",
        )),
    }
}

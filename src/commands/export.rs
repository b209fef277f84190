//! `medgrpo export`: writes a PEFT adapter in canonical form, or merges it into the base
//! checkpoint's dense weights as a Hugging Face safetensors snapshot (`lora::merge`).

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

use crate::lora::adapter::Adapter;
use crate::lora::merge::merge_snapshot;

/// Arguments of `medgrpo export`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  medgrpo export --adapter runs/x/checkpoint-500 --out adapter/\n  medgrpo export --adapter runs/x/checkpoint-500 --merge --model /models/medgemma-4b-it --out merged/"
)]
pub struct ExportArgs {
    /// PEFT adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    pub adapter: PathBuf,
    /// Merge the adapter into the base weights (needs --model).
    #[arg(long)]
    pub merge: bool,
    /// Base model snapshot directory (for --merge).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs the subcommand.
pub fn run(args: ExportArgs) -> Result<()> {
    let adapter = Adapter::load(&args.adapter)
        .with_context(|| format!("loading adapter {}", args.adapter.display()))?;
    if !args.merge {
        adapter.save(&args.out)?;
        println!(
            "wrote {} LoRA layers (r = {}) to {}",
            adapter.layers.len(),
            adapter.config.r,
            args.out.display()
        );
        return Ok(());
    }
    let model = args
        .model
        .as_ref()
        .context("--merge needs --model DIR (the base snapshot)")?;
    let merged = merge_snapshot(model, &adapter, &args.out)?;
    println!(
        "merged {merged} LoRA layers into {} -> {}",
        model.display(),
        args.out.display()
    );
    Ok(())
}

//! `medgrpo loss`: the GRPO loss and LoRA gradients of one group (or one optimizer step of
//! several groups) through the learner's own code path, for checking against TRL. The group
//! file's format is documented in [`crate::grpo::group_loss`].
//!
//! Output (`--json`): `{"loss", "advantages", "groups": [{"logps", "entropy", "ref_logps"}],
//! "metrics": {"kl", "entropy", "clip_ratio/low_mean", ...}, "grads"}`, per-token values unpadded.
//! `--grads FILE` writes d(loss)/d(LoRA weights) as safetensors under PEFT's key names
//! (`base_model.model.model.language_model.layers.N.self_attn.q_proj.lora_A.weight`).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;

use super::model_args::ModelArgs;
use crate::device::{OnBackend, run_on};
use crate::grpo::group_loss::{GroupFile, compute};
use crate::lora::extract::write_matrices;

/// Arguments of `medgrpo loss`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  medgrpo loss --model DIR --adapter DIR --group group.json --json"
)]
pub struct LossArgs {
    /// Model, adapter (the policy), quantization, device.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The group (or step) and the loss settings, as JSON (see the module doc).
    #[arg(long)]
    pub group: PathBuf,
    /// Write the LoRA gradients here (safetensors, PEFT key names); needs `--adapter`.
    #[arg(long)]
    pub grads: Option<PathBuf>,
    /// Print the full JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand on `--device`.
pub fn run(args: LossArgs) -> Result<()> {
    if args.grads.is_some() && args.model.adapter.is_none() {
        bail!("--grads needs --adapter: without adapters there is nothing trainable");
    }
    run_on(args.model.device, args)
}

impl OnBackend for LossArgs {
    type Output = ();
    fn run<B: Backend>(self) -> Result<()> {
        loss_on::<Autodiff<B>>(self)
    }
}

fn loss_on<AB: AutodiffBackend>(args: LossArgs) -> Result<()> {
    let file = GroupFile::load(&args.group)?;
    let model = args.model.load_model::<AB>()?;
    let base = args.group.parent().unwrap_or(Path::new("."));
    let report = compute(&model, &args.model.model, &file, base)?;
    if let Some(path) = &args.grads {
        write_matrices(path, &report.grads)?;
    }
    let metrics = report.metric_map();
    if args.json {
        let groups: Vec<serde_json::Value> = report
            .groups
            .iter()
            .map(|g| {
                serde_json::json!({"logps": g.logps, "entropy": g.entropy, "ref_logps": g.ref_logps})
            })
            .collect();
        let v = serde_json::json!({
            "loss": report.loss,
            "advantages": report.advantages,
            "groups": groups,
            "metrics": metrics,
            "grads": args.grads,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (k, v) in &metrics {
            println!("{k}\t{v:.6}");
        }
        println!("advantages\t{:?}", report.advantages);
        if let Some(p) = &args.grads {
            println!("grads\t{} ({} tensors)", p.display(), report.grads.len());
        }
    }
    Ok(())
}

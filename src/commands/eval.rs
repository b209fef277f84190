//! `medgrpo eval`: accuracy, format rate and reward components per split.
//!
//! Greedy answers of the base model or of an adapter (or both, in one table) on the
//! `train`, `val` or `test` split of a pipeline YAML, scored with the training rewards
//! ([`crate::grpo::eval`]). Writes `eval.json` and `predictions-<base|adapter>.jsonl` into the
//! run directory (`output_dir`) or `--out`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::Args;

use crate::config::Config;
use crate::device::{OnBackend, run_on};
use crate::grpo::eval::{EvalOptions, EvalReport, Split, compare, evaluate};
use crate::lora::load::inference_model;

/// Arguments of `medgrpo eval`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example:\n  medgrpo eval pipelines/train.yaml --split test --adapter runs/x/checkpoint-500\n  medgrpo eval pipelines/demo.yaml --adapter runs/demo/checkpoint-30 --base   # both, one table"
)]
pub struct EvalArgs {
    /// Pipeline YAML file (model, data, prompt, reward and stage settings).
    pub config: PathBuf,
    /// Dataset split: its file is data.train, data.val or data.test.
    #[arg(long, value_enum, default_value_t = Split::Val)]
    pub split: Split,
    /// PEFT adapter directory (a checkpoint of `medgrpo pipeline`, or PEFT's own).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Evaluate the base model too (with --adapter) and print both in one table.
    #[arg(long)]
    pub base: bool,
    /// Only the first N valid records of the split.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Predictions file (JSONL) of the adapter's run (of the base run without --adapter);
    /// with --base the base run's goes next to it as `<stem>.base.jsonl`.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Directory for eval.json and the predictions (default: the config's output_dir).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Base quantization: `nf4` (bitsandbytes-identical, as the learner sees it) or `none`;
    /// default: the config's quantization.load_in_4bit.
    #[arg(long, value_parser = ["nf4", "none"])]
    pub quant: Option<String>,
    /// Also quantize the NF4 absmax statistics (bnb_4bit_use_double_quant).
    #[arg(long)]
    pub double_quant: bool,
    /// Prompts decoded together (1 = each alone, exactly as `medgrpo generate --greedy`).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Override any config value: `--set training.max_completion_length=256` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// What a finished `eval` produced.
#[derive(Debug)]
pub struct EvalOutcome {
    /// The base model's report, when it was evaluated.
    pub base: Option<EvalReport>,
    /// The adapter's report, when an adapter was given.
    pub adapter: Option<EvalReport>,
    /// Where `eval.json` was written.
    pub json_path: PathBuf,
    /// The text printed to stdout (one report, or the comparison table).
    pub text: String,
}

/// The config of `args` with its `--set` overrides and `--quant` / `--double-quant` applied.
pub fn resolve_config(args: &EvalArgs) -> Result<Config> {
    let mut config = Config::load(&args.config, &args.set)?;
    let q = &mut config.quantization;
    match args.quant.as_deref() {
        Some("nf4") => q.load_in_4bit = true,
        Some("none") => q.load_in_4bit = false,
        _ => {}
    }
    if args.double_quant {
        if !q.load_in_4bit {
            bail!("--double-quant needs an NF4 base (--quant nf4 or quantization.load_in_4bit)");
        }
        q.bnb_4bit_use_double_quant = true;
    }
    Ok(config)
}

/// `<stem>.base.<ext>` next to `path`.
fn base_sibling(path: &Path) -> PathBuf {
    let stem = path.file_stem().map_or_else(
        || "predictions".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let ext = path
        .extension()
        .map_or_else(|| "jsonl".to_string(), |e| e.to_string_lossy().into_owned());
    path.with_file_name(format!("{stem}.base.{ext}"))
}

/// Evaluates what `args` asks for on backend `B`, writes `eval.json` and the predictions,
/// and returns the reports (what [`run`] prints).
pub fn eval_on<B: Backend>(
    config: &Config,
    args: &EvalArgs,
    device: &B::Device,
    progress: bool,
) -> Result<EvalOutcome> {
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(&config.output_dir));
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let want_base = args.adapter.is_none() || args.base;
    let primary = args.predictions.clone().unwrap_or_else(|| {
        out_dir.join(if args.adapter.is_some() {
            "predictions-adapter.jsonl"
        } else {
            "predictions-base.jsonl"
        })
    });
    let base_predictions = match (&args.adapter, &args.predictions) {
        (None, _) => primary.clone(),
        (Some(_), Some(p)) => base_sibling(p),
        (Some(_), None) => out_dir.join("predictions-base.jsonl"),
    };
    let opts = |predictions: PathBuf| EvalOptions {
        split: args.split,
        limit: args.limit,
        progress,
        predictions: Some(predictions),
        batch_size: args.batch_size,
    };
    let base = if want_base {
        let model = inference_model::<B>(config, None, device)?;
        Some(evaluate(config, &model, &opts(base_predictions.clone()))?)
    } else {
        None
    };
    let adapter = match &args.adapter {
        None => None,
        Some(dir) => {
            let model = inference_model::<B>(config, Some(dir), device)?;
            Some(evaluate(config, &model, &opts(primary.clone()))?)
        }
    };
    let mut results = serde_json::Map::new();
    if let Some(r) = &base {
        let mut j = r.to_json();
        j["predictions"] = base_predictions.display().to_string().into();
        results.insert("base".into(), j);
    }
    if let Some(r) = &adapter {
        let mut j = r.to_json();
        j["predictions"] = primary.display().to_string().into();
        results.insert("adapter".into(), j);
    }
    let q = &config.quantization;
    let json = serde_json::json!({
        "config": args.config,
        "split": args.split.name(),
        "model": config.model.path,
        "adapter": args.adapter,
        "limit": args.limit,
        "quantization": if q.load_in_4bit {
            if q.bnb_4bit_use_double_quant { "nf4+double_quant" } else { "nf4" }
        } else {
            "none"
        },
        "max_completion_length": config.training.max_completion_length,
        "results": results,
    });
    let json_path = out_dir.join("eval.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let text = match (&base, &adapter) {
        (Some(b), Some(a)) => compare(b, a),
        (Some(r), None) | (None, Some(r)) => r.render(),
        (None, None) => unreachable!("at least one model is evaluated"),
    };
    Ok(EvalOutcome {
        base,
        adapter,
        json_path,
        text,
    })
}

/// Runs the subcommand on the config's device.
pub fn run(args: EvalArgs) -> Result<()> {
    let config = resolve_config(&args)?;
    if let Some(w) = config.model.dtype_warning() {
        eprintln!("{w}");
    }
    crate::demo::data::ensure(&config)?;
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let device = config.model.device;
    let outcome = run_on(
        device,
        Eval {
            config,
            args,
            progress,
        },
    )?;
    println!("{}", outcome.text);
    eprintln!("wrote {}", outcome.json_path.display());
    Ok(())
}

/// The evaluation, on the backend `model.device` names.
struct Eval {
    config: Config,
    args: EvalArgs,
    progress: bool,
}

impl OnBackend for Eval {
    type Output = EvalOutcome;
    fn run<B: Backend>(self) -> Result<EvalOutcome> {
        eval_on::<B>(&self.config, &self.args, &Default::default(), self.progress)
    }
}

#[cfg(test)]
mod tests;

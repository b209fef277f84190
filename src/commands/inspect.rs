//! `medgrpo inspect`: what is in a shard directory or a model checkpoint.

use clap::{Args, Subcommand};

/// Arguments of `medgrpo inspect`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  medgrpo inspect shards shards/medgemma-896 --key deid_png/p1/s1/img.png --png out.png\n  medgrpo inspect model /models/medgemma-4b-it --quant nf4 --double-quant\n  medgrpo inspect memory pipelines/train.yaml --device-memory 16"
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
    /// The predicted memory of a training run of a pipeline YAML, before any weight loads.
    Memory(MemoryArgs),
}

/// Arguments of `medgrpo inspect memory`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  medgrpo inspect memory pipelines/train.yaml --device-memory 16 --set training.num_generations=8"
)]
pub struct MemoryArgs {
    /// Pipeline YAML file (its model.path must hold the model's config.json).
    pub config: std::path::PathBuf,
    /// Override any config value, as `medgrpo pipeline` does (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Prompt length in tokens, image tokens included (default: prompt.max_prompt_length).
    #[arg(long)]
    pub prompt_tokens: Option<usize>,
    /// The device's memory in GB: say whether the run fits, and what to change if not.
    #[arg(long)]
    pub device_memory: Option<f64>,
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

/// Arguments of `medgrpo inspect model`: the memory table is computed from `config.json` alone,
/// so it works on a snapshot whose weights are not downloaded.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Checkpoint directory (or a config.json file).
    pub dir: std::path::PathBuf,
    /// Quantize the Linear weights (`nf4`) or keep them dense (`none`).
    #[arg(long, default_value = "none", value_parser = ["none", "nf4"])]
    pub quant: String,
    /// Double quantization of the NF4 absmax.
    #[arg(long)]
    pub double_quant: bool,
    /// NF4 block size.
    #[arg(long, default_value_t = 64)]
    pub blocksize: usize,
    /// Keep the vision tower dense (transformers quantizes both towers by default).
    #[arg(long)]
    pub dense_vision: bool,
    /// Dtype of dense tensors in memory: bf16 (GPU) or f32 (CPU).
    #[arg(long, default_value = "bf16", value_parser = ["bf16", "f32"])]
    pub dtype: String,
    /// LoRA rank to account for (default targets q/k/v/o/gate/up/down of the language model).
    #[arg(long)]
    pub lora_r: Option<usize>,
    /// LoRA on the vision tower's matching projections too.
    #[arg(long)]
    pub lora_vision: bool,
}

/// Prints the parameter / memory table of a model from its config.json.
fn inspect_model(args: ModelArgs) -> anyhow::Result<()> {
    use crate::memory::{MemoryOptions, memory_report};
    use anyhow::Context;
    let path = if args.dir.is_dir() {
        args.dir.join("config.json")
    } else {
        args.dir.clone()
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let opts = MemoryOptions {
        nf4: args.quant == "nf4",
        double_quant: args.double_quant,
        blocksize: args.blocksize,
        quantize_vision: !args.dense_vision,
        stored_bytes: 2,
        compute_bytes: if args.dtype == "f32" { 4 } else { 2 },
        lora_r: args.lora_r,
        lora_vision: args.lora_vision,
    };
    let report = memory_report(&config, &opts).with_context(|| format!("in {}", path.display()))?;
    println!("{}", path.display());
    print!("{}", report.render(&opts));
    Ok(())
}

/// Prints the predicted training footprint of a pipeline YAML.
fn inspect_memory(args: MemoryArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let config = crate::config::Config::load(&args.config, &args.set)?;
    let path = std::path::Path::new(&config.model.path).join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (model.path of {})",
            path.display(),
            args.config.display()
        )
    })?;
    let model: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let prompt = args
        .prompt_tokens
        .unwrap_or(config.prompt.max_prompt_length);
    let f = crate::memory::training::footprint(&config, &model, prompt)?;
    let t = &config.training;
    println!(
        "{}: {} prompts x G={} per step, {prompt} prompt + {} completion tokens, device {:?}",
        args.config.display(),
        t.prompts_per_step(),
        t.num_generations,
        t.max_completion_length,
        config.model.device
    );
    print!(
        "{}",
        f.render(args.device_memory.map(|gb| (gb * 1e9) as usize))
    );
    Ok(())
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
        InspectWhat::Model(a) => inspect_model(a),
        InspectWhat::Memory(a) => inspect_memory(a),
    }
}

//! `medgrpo generate`: sampling from the model with a shared-prefix KV cache.
//!
//! JSON output (`--json`), one object:
//! ```json
//! {"model": "DIR", "prompt_ids": [2, 105, ...],
//!  "completions": [{"ids": [...], "text": "...", "logprobs": [...], "finish_reason": "stop"}]}
//! ```
//! `text` is decoded with special tokens skipped (what the reward scorer sees); `logprobs` are
//! `log_softmax(logits / temperature)` at each generated id (TRL's definition); `finish_reason` is
//! `stop` (an eos id of generation_config.json ended it, the id is included) or `length`.

use anyhow::{Result, bail};
use burn::prelude::*;
use clap::Args;

use super::model_args::PromptArgs;
use crate::device::{OnBackend, run_on};
use crate::model::generate::SamplingOptions;

/// Arguments of `medgrpo generate`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  medgrpo generate --model DIR --image cxr.png --prompt 'Is there an effusion?' --json"
)]
pub struct GenerateArgs {
    /// Model, image and prompt.
    #[command(flatten)]
    pub input: PromptArgs,
    /// Maximum completion length.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Argmax decoding.
    #[arg(long)]
    pub greedy: bool,
    /// Sampling temperature (default: generation_config.json, else 1).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass (default: generation_config.json).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Top-k cut (0 = off; default: generation_config.json).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Min-p cut (0 = off; default: generation_config.json).
    #[arg(long)]
    pub min_p: Option<f64>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Completions per prompt (they share the prompt's prefill).
    #[arg(long, default_value_t = 1)]
    pub num_return_sequences: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand on `--device`.
pub fn run(args: GenerateArgs) -> Result<()> {
    run_on(args.input.model.device, args)
}

impl OnBackend for GenerateArgs {
    type Output = ();
    fn run<B: Backend>(self) -> Result<()> {
        generate_on::<B>(self)
    }
}

fn generate_on<B: Backend>(args: GenerateArgs) -> Result<()> {
    let (loaded, mut prompt) = args.input.load_prompt::<B>()?;
    prompt.seed = args.seed;
    let ids = prompt.ids.clone();
    let g = &loaded.generation;
    let opts = SamplingOptions {
        greedy: args.greedy,
        temperature: args.temperature.unwrap_or(g.temperature),
        top_k: args.top_k.unwrap_or(g.top_k),
        top_p: args.top_p.unwrap_or(g.top_p),
        min_p: args.min_p.unwrap_or(g.min_p),
        max_new_tokens: args.max_new_tokens,
        eos_token_ids: g.eos_token_ids.clone(),
        pad_token_id: g.pad_token_id,
    };
    if opts.temperature <= 0.0 {
        bail!("--temperature must be positive (use --greedy for argmax decoding)");
    }
    let out = loaded
        .model
        .generate(&[prompt], args.num_return_sequences, &opts)?;
    let decode = |ids: &[u32]| -> Result<Option<String>> {
        loaded
            .tokenizer
            .as_ref()
            .map(|t| t.decode(ids, true))
            .transpose()
    };
    if args.json {
        let completions = out[0]
            .iter()
            .map(|c| {
                Ok(serde_json::json!({
                    "ids": c.ids,
                    "text": decode(&c.ids)?,
                    "logprobs": c.logprobs,
                    "finish_reason": if c.stopped { "stop" } else { "length" },
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        let v = serde_json::json!({"model": args.input.model.model, "prompt_ids": ids, "completions": completions});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (i, c) in out[0].iter().enumerate() {
            let text = decode(&c.ids)?.unwrap_or_else(|| format!("{:?}", c.ids));
            let why = if c.stopped { "stop" } else { "length" };
            println!(
                "--- completion {i} ({} tokens, {why}) ---\n{text}",
                c.ids.len()
            );
        }
    }
    Ok(())
}

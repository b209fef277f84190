//! `medgrpo logprobs`: teacher-forced completion log-probs, for parity checks.
//!
//! JSON output (`--json`):
//! ```json
//! {"input_ids": [...], "completion_ids": [...], "temperature": 0.7,
//!  "logprobs": [-1.23, ...], "sum": -9.87}
//! ```
//! `logprobs[j] = log_softmax(logits / temperature)[completion_ids[j]]` at the position before
//! each completion token, exactly what TRL computes for its loss.

use anyhow::Result;
use burn::prelude::Backend;
use clap::Args;

use super::model_args::{PromptArgs, parse_ids};
use crate::device::{OnBackend, run_on};

/// Arguments of `medgrpo logprobs`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  medgrpo logprobs --model DIR --prompt 'Hi' --completion-ids 17,42 --json"
)]
pub struct LogprobsArgs {
    /// Model, image and prompt.
    #[command(flatten)]
    pub input: PromptArgs,
    /// Completion ids to score (list or file).
    #[arg(long)]
    pub completion_ids: String,
    /// Logits are divided by it before the log-softmax.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand on `--device`.
pub fn run(args: LogprobsArgs) -> Result<()> {
    if args.temperature <= 0.0 {
        anyhow::bail!("--temperature must be positive");
    }
    run_on(args.input.model.device, args)
}

impl OnBackend for LogprobsArgs {
    type Output = ();
    fn run<B: Backend>(self) -> Result<()> {
        logprobs_on::<B>(self)
    }
}

fn logprobs_on<B: Backend>(args: LogprobsArgs) -> Result<()> {
    let (loaded, prompt) = args.input.load_prompt::<B>()?;
    let ids = prompt.ids.clone();
    let completion = parse_ids(&args.completion_ids)?;
    let lp = loaded.model.completion_logprobs(
        &prompt,
        std::slice::from_ref(&completion),
        args.temperature,
    )?;
    let lp: Vec<f32> = lp
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let sum: f64 = lp.iter().map(|&x| x as f64).sum();
    if args.json {
        let v = serde_json::json!({
            "input_ids": ids, "completion_ids": completion, "temperature": args.temperature,
            "logprobs": lp, "sum": sum,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (id, l) in completion.iter().zip(&lp) {
            println!("{id}\t{l:.6}");
        }
        println!("sum\t{sum:.6}");
    }
    Ok(())
}

//! Command-line interface: one subcommand per user task, each defined next to its
//! implementation in `commands/` so that a subcommand is one file to read.

use clap::{Parser, Subcommand};

use crate::commands;

/// GRPO fine-tuning of MedGemma on chest X-ray multiple-choice questions.
#[derive(Debug, Parser)]
#[command(
    name = "medgrpo",
    version,
    about,
    after_help = "Start with the demo:  medgrpo pipeline pipelines/demo.yaml"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The user's tasks, in the order a project meets them.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Precompute 8-bit image tensors into memory-mappable shards (run once per dataset).
    Shard(commands::shard::ShardArgs),
    /// Run a training pipeline described by a YAML file.
    Pipeline(commands::pipeline::PipelineArgs),
    /// Evaluate the base model or an adapter on a dataset split.
    Eval(commands::eval::EvalArgs),
    /// Generate completions for one prompt (and optionally an image).
    Generate(commands::generate::GenerateArgs),
    /// Per-token log-probabilities of given completion ids under the model.
    Logprobs(commands::logprobs::LogprobsArgs),
    /// Inspect shards or a model checkpoint.
    Inspect(commands::inspect::InspectArgs),
    /// Score completions produced anywhere with exactly the training reward.
    Reward(commands::reward::RewardArgs),
    /// Compute the GRPO loss (and gradients) of one group, for checking against TRL.
    Loss(commands::loss::LossArgs),
    /// Export an adapter, or merge it into dense weights.
    Export(commands::export::ExportArgs),
    /// Benchmarks that print figures (runtime, sharder, reward, model).
    Bench(commands::bench::BenchArgs),
}

/// Parses the command line, runs the subcommand and turns its outcome into an exit code:
/// errors are printed as one readable chain, never as a panic; 130 for a run stopped by
/// Ctrl-C, 1 for any other error.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Shard(a) => commands::shard::run(a),
        Command::Pipeline(a) => commands::pipeline::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Logprobs(a) => commands::logprobs::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Reward(a) => commands::reward::run(a),
        Command::Loss(a) => commands::loss::run(a),
        Command::Export(a) => commands::export::run(a),
        Command::Bench(a) => commands::bench::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", crate::clip::error_chain(&e));
            crate::stages::exit_code(&e)
        }
    }
}

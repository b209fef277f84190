//! One module per subcommand: its arguments (clap) and its `run` function.

pub mod bench;
pub mod eval;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod logprobs;
pub mod loss;
pub mod pipeline;
pub mod reward;
pub mod shard;

/// The error a subcommand returns until the issue that builds it has landed, so a user
/// never mistakes a missing feature for a silent success.
pub fn not_landed(command: &str, issue: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "`medgrpo {command}` is not available in this build yet (it lands with {issue})"
    )
}

//! `medgrpo bench`: benchmarks that print figures, so speed targets are measured in a
//! release build and never asserted by timed tests.

use clap::Args;

/// Arguments of `medgrpo bench`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  cargo run --release -- bench stages")]
pub struct BenchArgs {
    /// Which benchmark: stages, reward, decode (MEDGRPO_BENCH_MODEL=DIR), nf4, shard, loader,
    /// grpo (MEDGRPO_PYTHON=python for the TRL side, MEDGRPO_BENCH_DEVICE=cuda for the GPU).
    pub what: String,
}

/// A benchmark knob: the environment variable `key` as a count, `default` when unset (knobs
/// are environment variables because `bench` takes only a name).
pub fn env_usize(key: &str, default: usize) -> anyhow::Result<usize> {
    use anyhow::Context;
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{key}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

/// Benchmarks this build knows.
const KNOWN: &[&str] = &[
    "stages", "reward", "decode", "nf4", "shard", "loader", "grpo",
];

/// Runs a benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what.as_str() {
        "stages" => crate::stages::bench::print_standard(),
        "reward" => super::reward::bench_reward()?,
        "decode" => crate::model::bench::decode()?,
        "nf4" => crate::quant::bench::run()?,
        "shard" => crate::data::bench::bench_shard()?,
        "loader" => crate::data::bench::bench_loader()?,
        "grpo" => crate::grpo::bench::bench_grpo()?,
        other => anyhow::bail!("unknown benchmark `{other}` (known: {})", KNOWN.join(", ")),
    }
    Ok(())
}

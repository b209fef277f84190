//! `medgrpo bench`: benchmarks that print figures, so speed targets are measured in a
//! release build and never asserted by timed tests.

use clap::Args;

use crate::bench;

/// Arguments of `medgrpo bench`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  cargo run --release -- bench stages")]
pub struct BenchArgs {
    /// Which benchmark: stages, reward, decode (MEDGRPO_BENCH_MODEL=DIR), nf4, shard, loader,
    /// grpo (MEDGRPO_PYTHON=python for the TRL side, MEDGRPO_BENCH_DEVICE=cuda for the GPU).
    pub what: String,
}

/// Benchmarks this build knows.
const KNOWN: &[&str] = &[
    "stages", "reward", "decode", "nf4", "shard", "loader", "grpo",
];

/// Runs a benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !KNOWN.contains(&args.what.as_str()) {
        anyhow::bail!(
            "unknown benchmark `{}` (known: {})",
            args.what,
            KNOWN.join(", ")
        );
    }
    println!("{}", bench::machine_line());
    match args.what.as_str() {
        "stages" => bench::stages::print_standard(),
        "reward" => bench::reward::bench_reward()?,
        "decode" => bench::decode::decode()?,
        "nf4" => bench::nf4::run()?,
        "shard" => bench::shard::bench_shard()?,
        "loader" => bench::shard::bench_loader()?,
        "grpo" => bench::grpo::bench_grpo()?,
        _ => unreachable!("checked against KNOWN above"),
    }
    Ok(())
}

//! `medgrpo bench`: benchmarks that print figures, so speed targets are measured in a
//! release build and never asserted by timed tests.

use clap::Args;

/// Arguments of `medgrpo bench`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  cargo run --release -- bench stages")]
pub struct BenchArgs {
    /// Which benchmark: stages.
    pub what: String,
}

/// Runs a benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what.as_str() {
        "stages" => crate::stages::bench::print_standard(),
        "shard" | "loader" => match args.what.as_str() {
            "shard" => crate::data::bench::bench_shard()?,
            _ => crate::data::bench::bench_loader()?,
        },
        other => anyhow::bail!("unknown benchmark `{other}` (known: stages, shard, loader)"),
    }
    Ok(())
}

//! `medgrpo bench`: benchmarks that print figures.

use clap::Args;

/// Arguments of `medgrpo bench`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  medgrpo bench stages")]
pub struct BenchArgs {
    /// Which benchmark.
    pub what: String,
}

/// Runs a benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("unknown benchmark `{}`", args.what)
}

//! `medgrpo shard`: precomputes 8-bit image records into shards (see `data::shard`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::config::Config;
use crate::data::shard::{BuildOptions, Partition, build, verify::verify};

/// Arguments of `medgrpo shard`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  medgrpo shard pipelines/train.yaml --workers 8\n  medgrpo shard pipelines/train.yaml --partition 3/16      # Slurm array task 3 of 16\n  medgrpo shard pipelines/train.yaml --dry-run\n  medgrpo shard pipelines/train.yaml --verify"
)]
pub struct ShardArgs {
    /// Pipeline YAML (its `data:` and `shards:` sections are used).
    pub config: PathBuf,
    /// Override a config value, e.g. `--set shards.image_size=448` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Decode worker threads (default: `stages.decode.workers`, else the number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Build only the shards whose index is i modulo n (n machines, no coordination).
    #[arg(long, value_name = "i/n")]
    pub partition: Option<Partition>,
    /// Print image and shard counts and the disk bytes to write; build nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Check every complete shard's checksum against its sidecar; build nothing.
    #[arg(long)]
    pub verify: bool,
    /// Exit non-zero if any image failed (default: only if nothing could be written).
    #[arg(long)]
    pub strict: bool,
    /// Stop after this many images (a trial run; the last shard stays incomplete).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Keep complete-looking shards without re-reading them. By default a rerun hashes every
    /// shard it would keep against its sidecar (one read of it, as --verify does) and rebuilds
    /// a damaged one.
    #[arg(long)]
    pub trust_complete: bool,
}

/// Runs the subcommand.
pub fn run(args: ShardArgs) -> Result<()> {
    let config = Config::load(&args.config, &args.sets)?;
    let dir = PathBuf::from(&config.shards.dir);
    if args.verify {
        let r = verify(&dir)?;
        println!(
            "{}: {} shard(s) ok, {} not built, {} bad",
            dir.display(),
            r.ok,
            r.missing,
            r.bad.len()
        );
        for (s, why) in &r.bad {
            println!("  shard {s}: {why}");
        }
        if !r.bad.is_empty() {
            bail!("{} shard(s) failed verification", r.bad.len());
        }
        return Ok(());
    }
    let opts = BuildOptions {
        workers: args.workers,
        partition: args.partition.unwrap_or(Partition::ALL),
        dry_run: args.dry_run,
        strict: args.strict,
        limit: args.limit,
        progress: std::io::stderr().is_terminal(),
        trust_complete: args.trust_complete,
    };
    let s = build(&config, &opts)?;
    if args.dry_run {
        println!(
            "{} questions ({} rejected), {} unique images, {} shard(s) of {} images of {}x{}x{}; this partition: {} shard(s), {} complete, {:.3} GB to write into {}",
            s.questions,
            s.rejected_records,
            s.images,
            s.shards_total,
            config.shards.records_per_shard,
            config.shards.image_size,
            config.shards.image_size,
            config.shards.channels,
            s.shards_in_partition,
            s.shards_skipped,
            s.bytes as f64 / 1e9,
            dir.display()
        );
        return Ok(());
    }
    print!("{}", s.render());
    println!("shards in {} (failures: failures.jsonl)", dir.display());
    Ok(())
}

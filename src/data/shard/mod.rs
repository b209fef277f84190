//! Shards: every unique image converted once to fixed-size u8 records in memory-mappable
//! files, with per-shard sidecars and a manifest (format in [`format`]).

pub mod auto;
pub mod build;
pub mod format;
pub mod plan;
pub mod verify;
pub mod writer;

pub use build::{BuildOptions, BuildSummary, build};
pub use format::{Manifest, ShardSettings, Sidecar};
pub use plan::Partition;

#[cfg(test)]
mod tests;

//! The on-disk format of a shard directory (DESIGN.md §3):
//!
//! ```text
//! DIR/manifest.json          settings + settings hash + key-list hash (same for every partition)
//! DIR/shard-00000.bin        records × H·W·C bytes of u8, row-major HWC, no header
//! DIR/shard-00000.json       sidecar: keys in slot order, failures, sha256 + size of the .bin
//! DIR/failures.jsonl         every failed image (key, path, reason), one JSON per line
//! DIR/rejects.jsonl          dataset records dropped by validation
//! ```
//!
//! A record is found by `slot * record_bytes`; a failed image keeps its slot (zeros) so
//! offsets never shift. The sidecar is renamed into place last: its presence marks the shard
//! complete.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Conversion, ShardsConfig};

/// Bumped whenever the layout or the meaning of a record changes.
pub const FORMAT_VERSION: u32 = 1;
/// The resize filter, part of the settings hash.
pub const RESIZE: &str = "pil-bilinear";

/// What a record's bytes depend on; the loader refuses shards whose hash differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSettings {
    /// Square side.
    pub image_size: u32,
    /// 1 or 3.
    pub channels: u8,
    /// 8-bit policy.
    pub conversion: Conversion,
}

impl ShardSettings {
    /// From the `shards:` section; rejects channel counts other than 1 and 3.
    pub fn from_config(c: &ShardsConfig) -> Result<Self> {
        if c.channels != 1 && c.channels != 3 {
            bail!("shards.channels must be 1 or 3 (got {})", c.channels);
        }
        if c.image_size == 0 || c.image_size > 16384 {
            bail!(
                "shards.image_size must be in 1..=16384 (got {})",
                c.image_size
            );
        }
        Ok(Self {
            image_size: c.image_size as u32,
            channels: c.channels as u8,
            conversion: c.conversion,
        })
    }

    /// Bytes of one record.
    pub fn record_bytes(&self) -> usize {
        self.image_size as usize * self.image_size as usize * self.channels as usize
    }

    /// First 16 hex digits of sha256 over the canonical settings JSON.
    pub fn hash(&self) -> String {
        let canonical = serde_json::json!({
            "format_version": FORMAT_VERSION,
            "image_size": self.image_size,
            "channels": self.channels,
            "conversion": self.conversion,
            "resize": RESIZE,
        });
        hex(&Sha256::digest(canonical.to_string().as_bytes()))[..16].to_string()
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Square side.
    pub image_size: u32,
    /// Channels per record.
    pub channels: u8,
    /// 8-bit policy.
    pub conversion: Conversion,
    /// Resize filter.
    pub resize: String,
    /// [`ShardSettings::hash`].
    pub settings_hash: String,
    /// `image_size² × channels`.
    pub record_bytes: usize,
    /// Slots per shard (the last shard may hold fewer).
    pub records_per_shard: usize,
    /// Unique images over all splits.
    pub num_images: usize,
    /// Shard files.
    pub num_shards: usize,
    /// sha256 of the sorted key list (one key per line): identifies the dataset.
    pub keys_sha256: String,
}

impl Manifest {
    /// The settings this manifest was written with.
    pub fn settings(&self) -> ShardSettings {
        ShardSettings {
            image_size: self.image_size,
            channels: self.channels,
            conversion: self.conversion,
        }
    }
}

/// One failed image in a sidecar or `failures.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// Shard index.
    pub shard: usize,
    /// Slot in the shard (its bytes are zeros).
    pub slot: usize,
    /// Image key.
    pub key: String,
    /// File that was read.
    pub path: String,
    /// Full error chain.
    pub reason: String,
    /// Innermost cause, for grouping in the summary.
    pub cause: String,
}

/// `shard-NNNNN.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Shard index.
    pub shard: usize,
    /// Settings hash the records were made with.
    pub settings_hash: String,
    /// Bytes per record.
    pub record_bytes: usize,
    /// Keys in slot order.
    pub keys: Vec<String>,
    /// Failed slots.
    pub failures: Vec<Failure>,
    /// Colour images stored as grey (channels = 1).
    pub colour_to_grey: usize,
    /// sha256 of the `.bin`.
    pub sha256: String,
    /// Size of the `.bin`.
    pub bytes: u64,
}

/// `DIR/shard-NNNNN.bin`.
pub fn bin_path(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("shard-{shard:05}.bin"))
}

/// `DIR/shard-NNNNN.json`.
pub fn sidecar_path(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("shard-{shard:05}.json"))
}

/// The temporary name a file is written under before its rename.
pub fn tmp_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to a temporary name, then renames it over `path` (readers never see a
/// half-written file).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Reads `manifest.json` of a shard directory.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let p = dir.join("manifest.json");
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let m: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a shard manifest", p.display()))?;
    if m.format_version != FORMAT_VERSION {
        bail!(
            "{}: shard format version {} is not supported (this build reads {FORMAT_VERSION})",
            p.display(),
            m.format_version
        );
    }
    Ok(m)
}

/// Reads a sidecar; `None` when the shard is not complete (no sidecar).
pub fn read_sidecar(dir: &Path, shard: usize) -> Result<Option<Sidecar>> {
    let p = sidecar_path(dir, shard);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
    };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{} is not a shard sidecar", p.display()))
}

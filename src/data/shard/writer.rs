//! Writes one shard: records streamed in slot order to `shard-NNNNN.bin.tmp` while hashing,
//! then the `.bin` is renamed into place and the sidecar written atomically last, so a shard
//! is either complete (sidecar present) or ignored and rebuilt by the next run.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::format::{
    FORMAT_VERSION, Failure, Sidecar, bin_path, hex, sidecar_path, tmp_path, write_atomic,
};

/// A shard being written.
pub struct ShardWriter {
    dir: PathBuf,
    shard: usize,
    keys: Vec<String>,
    record_bytes: usize,
    settings_hash: String,
    out: BufWriter<File>,
    hasher: Sha256,
    next_slot: usize,
    failures: Vec<Failure>,
    colour_to_grey: usize,
    zeros: Vec<u8>,
}

impl ShardWriter {
    /// Starts shard `shard` holding `keys` (in slot order) under its temporary name.
    pub fn create(
        dir: &Path,
        shard: usize,
        keys: Vec<String>,
        record_bytes: usize,
        settings_hash: &str,
    ) -> Result<Self> {
        let tmp = tmp_path(&bin_path(dir, shard));
        let file =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            shard,
            keys,
            record_bytes,
            settings_hash: settings_hash.to_string(),
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            next_slot: 0,
            failures: Vec::new(),
            colour_to_grey: 0,
            zeros: vec![0; record_bytes],
        })
    }

    /// Shard index.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Whether every slot has been written.
    pub fn is_full(&self) -> bool {
        self.next_slot == self.keys.len()
    }

    /// Appends the record of slot `slot`, which must be the next one.
    pub fn push_ok(&mut self, slot: usize, bytes: &[u8], colour_to_grey: bool) -> Result<()> {
        if bytes.len() != self.record_bytes {
            bail!(
                "record of {} bytes for shard {} slot {slot}, expected {}",
                bytes.len(),
                self.shard,
                self.record_bytes
            );
        }
        self.check_slot(slot)?;
        self.colour_to_grey += colour_to_grey as usize;
        self.write(bytes)
    }

    /// Records slot `slot` as failed (its bytes are zeros).
    pub fn push_failed(&mut self, slot: usize, mut failure: Failure) -> Result<()> {
        self.check_slot(slot)?;
        failure.shard = self.shard;
        failure.slot = slot;
        self.failures.push(failure);
        let zeros = std::mem::take(&mut self.zeros);
        let r = self.write(&zeros);
        self.zeros = zeros;
        r
    }

    fn check_slot(&self, slot: usize) -> Result<()> {
        if slot != self.next_slot || slot >= self.keys.len() {
            bail!(
                "shard {}: slot {slot} arrived, expected {} (of {})",
                self.shard,
                self.next_slot,
                self.keys.len()
            );
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes).with_context(|| {
            format!(
                "cannot write {}",
                tmp_path(&bin_path(&self.dir, self.shard)).display()
            )
        })?;
        self.next_slot += 1;
        Ok(())
    }

    /// Flushes and syncs the data, renames it into place and writes the sidecar (last).
    pub fn finish(self) -> Result<Sidecar> {
        if !self.is_full() {
            bail!(
                "shard {} finished with {} of {} records",
                self.shard,
                self.next_slot,
                self.keys.len()
            );
        }
        let bin = bin_path(&self.dir, self.shard);
        let tmp = tmp_path(&bin);
        let file = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot flush {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        drop(file);
        std::fs::rename(&tmp, &bin)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), bin.display()))?;
        let sidecar = Sidecar {
            format_version: FORMAT_VERSION,
            shard: self.shard,
            settings_hash: self.settings_hash,
            record_bytes: self.record_bytes,
            bytes: (self.keys.len() * self.record_bytes) as u64,
            keys: self.keys,
            failures: self.failures,
            colour_to_grey: self.colour_to_grey,
            sha256: hex(&self.hasher.finalize()),
        };
        let text = serde_json::to_vec_pretty(&sidecar)?;
        write_atomic(&sidecar_path(&self.dir, self.shard), &text)?;
        Ok(sidecar)
    }
}

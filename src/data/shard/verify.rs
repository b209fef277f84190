//! `medgrpo shard --verify`: recomputes every complete shard's sha256 and size and compares
//! them with its sidecar, so a copied or damaged shard directory is caught before training.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::format::{Sidecar, bin_path, hex, read_manifest, read_sidecar};

/// Outcome of a verification.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct VerifyReport {
    /// Shards whose checksum and size match.
    pub ok: usize,
    /// Shards without a sidecar (not built yet).
    pub missing: usize,
    /// `(shard, reason)` of every mismatch.
    pub bad: Vec<(usize, String)>,
}

/// Checks every shard the manifest lists.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let m = read_manifest(dir)?;
    let mut rep = VerifyReport::default();
    for s in 0..m.num_shards {
        let Some(sc) = read_sidecar(dir, s)? else {
            rep.missing += 1;
            continue;
        };
        match against_sidecar(dir, s, &sc)? {
            None => rep.ok += 1,
            Some(why) => rep.bad.push((s, why)),
        }
    }
    Ok(rep)
}

/// Whether complete shard `s` still has the size and SHA-256 its sidecar records: `None` when
/// it does, else why not (a shard without a sidecar is not complete and has nothing to check).
/// Costs one read of the `.bin`.
pub fn check_shard(dir: &Path, s: usize) -> Result<Option<String>> {
    match read_sidecar(dir, s)? {
        Some(sc) => against_sidecar(dir, s, &sc),
        None => Ok(Some("its sidecar is gone".into())),
    }
}

fn against_sidecar(dir: &Path, s: usize, sc: &Sidecar) -> Result<Option<String>> {
    let path = bin_path(dir, s);
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => return Ok(Some(format!("cannot open {}: {e}", path.display()))),
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    let sum = hex(&h.finalize());
    Ok(if n != sc.bytes {
        Some(format!(
            "{} has {n} bytes, sidecar says {}",
            path.display(),
            sc.bytes
        ))
    } else if sum != sc.sha256 {
        Some(format!(
            "{} checksum {sum} differs from the sidecar's {}",
            path.display(),
            sc.sha256
        ))
    } else {
        None
    })
}

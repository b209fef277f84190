//! `medgrpo shard --verify`: recomputes every complete shard's sha256 and size and compares
//! them with its sidecar, so a copied or damaged shard directory is caught before training.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::format::{bin_path, hex, read_manifest, read_sidecar};

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
        let path = bin_path(dir, s);
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                rep.bad
                    .push((s, format!("cannot open {}: {e}", path.display())));
                continue;
            }
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
        if n != sc.bytes {
            rep.bad.push((
                s,
                format!(
                    "{} has {n} bytes, sidecar says {}",
                    path.display(),
                    sc.bytes
                ),
            ));
        } else if sum != sc.sha256 {
            rep.bad.push((
                s,
                format!(
                    "{} checksum {sum} differs from the sidecar's {}",
                    path.display(),
                    sc.sha256
                ),
            ));
        } else {
            rep.ok += 1;
        }
    }
    Ok(rep)
}

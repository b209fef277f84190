//! Merging a PEFT adapter into the base checkpoint's dense weights (`W + scaling · B · A`),
//! written as a Hugging Face safetensors snapshot.
//!
//! The merge streams: each safetensors file of the snapshot is memory-mapped and rewritten with
//! the same header (same names, dtypes, shapes, offsets), tensor by tensor, so memory stays at
//! one tensor; merged weights are computed in f32 and rounded back to the stored dtype
//! (bf16 round-to-nearest-even, like torch's `.to(bfloat16)`). Both the hub layout
//! (`language_model.model.*`) and the transformers ≥ 4.52 one (`model.language_model.*`) are
//! matched against the adapter's module paths.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use half::{bf16, f16};
use serde_json::Value;

use super::adapter::{Adapter, LoraPair, canonical_module_name};

/// Writes `out` = the snapshot `model` with `adapter` merged into its weights; copies the
/// other files (config, tokenizer, index). Returns the number of merged layers; fails if an
/// adapter layer has no weight in the snapshot.
pub fn merge_snapshot(model: &Path, adapter: &Adapter, out: &Path) -> Result<usize> {
    ensure!(
        model.canonicalize().ok() != out.canonicalize().ok(),
        "--out must differ from --model"
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let scaling = adapter.config.settings().scaling();
    let mut merged = BTreeSet::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(model)
        .with_context(|| format!("reading {}", model.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    let mut n_files = 0;
    for path in entries {
        if !path.is_file() {
            continue;
        }
        let name = path.file_name().context("file name")?;
        let dest = out.join(name);
        if path.extension().is_some_and(|e| e == "safetensors") {
            merge_file(&path, &dest, adapter, scaling, &mut merged)
                .with_context(|| format!("merging into {}", path.display()))?;
            n_files += 1;
        } else {
            std::fs::copy(&path, &dest)
                .with_context(|| format!("copying {} to {}", path.display(), dest.display()))?;
        }
    }
    ensure!(n_files > 0, "{} has no .safetensors file", model.display());
    let missing: Vec<&String> = adapter
        .layers
        .keys()
        .filter(|k| !merged.contains(*k))
        .collect();
    ensure!(
        missing.is_empty(),
        "{} adapter layers have no weight in the snapshot, e.g. {}",
        missing.len(),
        missing[0]
    );
    Ok(merged.len())
}

fn merge_file(
    src: &Path,
    dest: &Path,
    adapter: &Adapter,
    scaling: f64,
    merged: &mut BTreeSet<String>,
) -> Result<()> {
    let file = std::fs::File::open(src)?;
    // SAFETY: the snapshot is read-only input; it is not modified while mapped.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    ensure!(map.len() >= 8, "file too short");
    let n = u64::from_le_bytes(map[..8].try_into().expect("8 bytes")) as usize;
    ensure!(8 + n <= map.len(), "header length past the end");
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&map[8..8 + n]).context("header is not a JSON object")?;
    let data = &map[8 + n..];
    let mut tensors: Vec<(&String, &str, Vec<usize>, usize, usize)> = Vec::new();
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info["dtype"].as_str().context("dtype")?;
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .context("shape")?
            .iter()
            .map(|v| v.as_u64().map(|x| x as usize).context("shape entry"))
            .collect::<Result<_>>()?;
        let off = info["data_offsets"].as_array().context("data_offsets")?;
        let (s, e) = (
            off[0].as_u64().context("offset")? as usize,
            off[1].as_u64().context("offset")? as usize,
        );
        ensure!(s <= e && e <= data.len(), "{name}: offsets past the data");
        tensors.push((name, dtype, shape, s, e));
    }
    tensors.sort_by_key(|t| t.3);
    let mut w = BufWriter::new(
        std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?,
    );
    w.write_all(&map[..8 + n])?;
    let mut pos = 0;
    for (name, dtype, shape, s, e) in tensors {
        ensure!(s == pos, "{name}: tensors are not contiguous in the file");
        let module = name.strip_suffix(".weight").map(canonical_module_name);
        match module.as_ref().and_then(|m| adapter.layers.get(m)) {
            Some(pair) => {
                let module = module.expect("some");
                let bytes = merge_tensor(&data[s..e], dtype, &shape, pair, scaling)
                    .with_context(|| format!("{name} <- {module}"))?;
                w.write_all(&bytes)?;
                merged.insert(module);
            }
            None => w.write_all(&data[s..e])?,
        }
        pos = e;
    }
    w.flush()?;
    Ok(())
}

/// `W + scaling · B · A` in f32, returned in `dtype`'s little-endian bytes.
fn merge_tensor(
    raw: &[u8],
    dtype: &str,
    shape: &[usize],
    p: &LoraPair,
    scaling: f64,
) -> Result<Vec<u8>> {
    ensure!(shape.len() == 2, "weight is not 2-D: {shape:?}");
    let (out, inp) = (shape[0], shape[1]);
    let r = p.a.shape[0];
    ensure!(
        p.a.shape == [r, inp] && p.b.shape == [out, r],
        "adapter A {:?} / B {:?} do not fit a weight {shape:?}",
        p.a.shape,
        p.b.shape
    );
    let mut w: Vec<f32> = match dtype {
        "F32" => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "BF16" => raw
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        "F16" => raw
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        d => bail!("cannot merge into a {d} weight"),
    };
    let s = scaling as f32;
    for o in 0..out {
        let row = &mut w[o * inp..(o + 1) * inp];
        for k in 0..r {
            let bk = s * p.b.data[o * r + k];
            if bk == 0.0 {
                continue;
            }
            let arow = &p.a.data[k * inp..(k + 1) * inp];
            for (x, a) in row.iter_mut().zip(arow) {
                *x += bk * a;
            }
        }
    }
    Ok(match dtype {
        "F32" => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "BF16" => w
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => w
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
    })
}

#[cfg(test)]
mod tests;

//! Weight import from Hugging Face safetensors snapshots, tensor by tensor from a memmap.
//!
//! Accepted layouts (every key is mapped to one canonical name first):
//! - hub `Gemma3ForConditionalGeneration`: `language_model.model.*`, `vision_tower.vision_model.*`,
//!   `multi_modal_projector.*` (what transformers 5 also writes, minus `vision_model.`);
//! - transformers ≥ 4.52 in-memory layout: `model.language_model.*`, `model.vision_tower.*`, …;
//! - text-only `Gemma3ForCausalLM`: `model.*`.
//!
//! Canonical names: `language_model.layers.N.self_attn.q_proj.weight`,
//! `vision_tower.encoder.layers.N.mlp.fc1.weight`, `multi_modal_projector.mm_input_projection_weight`,
//! `lm_head.weight` (only used when the head is not tied).
//!
//! Every header is read and checked against the names and shapes the config implies before any
//! tensor is converted, so a wrong checkpoint fails with one error listing every problem. Tensors
//! are then converted one at a time (bf16/f16/f32 → f32), so peak host memory is the model plus one
//! tensor.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use memmap2::Mmap;
use safetensors::Dtype;

use super::config::ModelConfig;
use super::linear::Linear;

mod header;
pub use header::{TensorEntry, check_header, read_header};

/// A tensor on the host in f32, as read from a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape as stored in the checkpoint.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Moves the values to `device` as a rank-`D` tensor (panics if the rank differs; shapes are
    /// validated against the config before this is called).
    pub fn to_tensor<B: Backend, const D: usize>(self, device: &B::Device) -> Tensor<B, D> {
        assert_eq!(self.shape.len(), D, "tensor rank");
        Tensor::from_data(TensorData::new(self.data, self.shape), device)
    }
}

/// Hook through which every projection passes while loading: the default builds a dense
/// [`Linear`]; a quantizing loader (NF4) implements it to quantize the weight on the host before it
/// ever reaches the device. `name` is the canonical module path, e.g.
/// `language_model.layers.3.self_attn.q_proj` or `vision_tower.encoder.layers.0.mlp.fc1`.
pub trait LoadHook<B: Backend> {
    /// Builds the projection `name` from its `[out, in]` weight and optional bias.
    fn linear(
        &mut self,
        name: &str,
        weight: HostTensor,
        bias: Option<HostTensor>,
        device: &B::Device,
    ) -> Result<Linear<B>>;
}

/// Loads every projection dense in f32.
#[derive(Debug, Default, Clone, Copy)]
pub struct DenseLoad;

impl<B: Backend> LoadHook<B> for DenseLoad {
    fn linear(
        &mut self,
        _name: &str,
        weight: HostTensor,
        bias: Option<HostTensor>,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        Ok(Linear::from_host(weight, bias, device))
    }
}

/// Maps a checkpoint key of any accepted layout to its canonical name.
pub fn canonical_name(raw: &str) -> String {
    const TOP: [&str; 3] = ["language_model.", "vision_tower.", "multi_modal_projector."];
    let s = match raw.strip_prefix("model.") {
        Some(r) if TOP.iter().any(|p| r.starts_with(p)) => r,
        _ => raw,
    };
    if let Some(r) = s.strip_prefix("language_model.model.") {
        return format!("language_model.{r}");
    }
    if s == "language_model.lm_head.weight" || s == "lm_head.weight" {
        return "lm_head.weight".into();
    }
    if let Some(r) = s.strip_prefix("vision_tower.vision_model.") {
        return format!("vision_tower.{r}");
    }
    if TOP.iter().any(|p| s.starts_with(p)) {
        return s.to_string();
    }
    if let Some(r) = raw.strip_prefix("model.") {
        return format!("language_model.{r}");
    }
    raw.to_string()
}

/// Canonical name → shape of every tensor the config needs.
pub fn expected_tensors(cfg: &ModelConfig) -> BTreeMap<String, Vec<usize>> {
    let mut m = BTreeMap::new();
    let t = &cfg.text;
    let (h, hd) = (t.hidden_size, t.head_dim);
    m.insert(
        "language_model.embed_tokens.weight".into(),
        vec![t.vocab_size, h],
    );
    m.insert("language_model.norm.weight".into(), vec![h]);
    if !t.tie_word_embeddings {
        m.insert("lm_head.weight".into(), vec![t.vocab_size, h]);
    }
    for i in 0..t.num_hidden_layers {
        let p = format!("language_model.layers.{i}");
        for n in [
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ] {
            m.insert(format!("{p}.{n}.weight"), vec![h]);
        }
        m.insert(
            format!("{p}.self_attn.q_proj.weight"),
            vec![t.num_attention_heads * hd, h],
        );
        m.insert(
            format!("{p}.self_attn.k_proj.weight"),
            vec![t.num_key_value_heads * hd, h],
        );
        m.insert(
            format!("{p}.self_attn.v_proj.weight"),
            vec![t.num_key_value_heads * hd, h],
        );
        m.insert(
            format!("{p}.self_attn.o_proj.weight"),
            vec![h, t.num_attention_heads * hd],
        );
        m.insert(format!("{p}.self_attn.q_norm.weight"), vec![hd]);
        m.insert(format!("{p}.self_attn.k_norm.weight"), vec![hd]);
        m.insert(
            format!("{p}.mlp.gate_proj.weight"),
            vec![t.intermediate_size, h],
        );
        m.insert(
            format!("{p}.mlp.up_proj.weight"),
            vec![t.intermediate_size, h],
        );
        m.insert(
            format!("{p}.mlp.down_proj.weight"),
            vec![h, t.intermediate_size],
        );
    }
    if let Some(v) = &cfg.vision {
        let d = v.hidden_size;
        let e = "vision_tower.embeddings";
        m.insert(
            format!("{e}.patch_embedding.weight"),
            vec![d, v.num_channels, v.patch_size, v.patch_size],
        );
        m.insert(format!("{e}.patch_embedding.bias"), vec![d]);
        m.insert(
            format!("{e}.position_embedding.weight"),
            vec![v.patches_per_side().pow(2), d],
        );
        for i in 0..v.num_hidden_layers {
            let p = format!("vision_tower.encoder.layers.{i}");
            for n in ["layer_norm1", "layer_norm2"] {
                m.insert(format!("{p}.{n}.weight"), vec![d]);
                m.insert(format!("{p}.{n}.bias"), vec![d]);
            }
            for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                m.insert(format!("{p}.self_attn.{n}.weight"), vec![d, d]);
                m.insert(format!("{p}.self_attn.{n}.bias"), vec![d]);
            }
            m.insert(format!("{p}.mlp.fc1.weight"), vec![v.intermediate_size, d]);
            m.insert(format!("{p}.mlp.fc1.bias"), vec![v.intermediate_size]);
            m.insert(format!("{p}.mlp.fc2.weight"), vec![d, v.intermediate_size]);
            m.insert(format!("{p}.mlp.fc2.bias"), vec![d]);
        }
        m.insert("vision_tower.post_layernorm.weight".into(), vec![d]);
        m.insert("vision_tower.post_layernorm.bias".into(), vec![d]);
        m.insert(
            "multi_modal_projector.mm_soft_emb_norm.weight".into(),
            vec![d],
        );
        m.insert(
            "multi_modal_projector.mm_input_projection_weight".into(),
            vec![d, h],
        );
    }
    m
}

struct Entry {
    file: usize,
    raw: String,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// An opened snapshot: its safetensors files and a canonical-name index of their tensors.
///
/// Headers are read through a memory map; tensor data is read with positional reads in chunks
/// of [`READ_CHUNK`] bytes, so the pages of a multi-gigabyte checkpoint never count in this
/// process's resident memory (mapped file pages would, until the map is dropped) and a tensor
/// is never held twice in full while it is converted.
pub struct Checkpoint {
    paths: Vec<PathBuf>,
    files: Vec<File>,
    entries: BTreeMap<String, Entry>,
}

/// Bytes read at once when converting a tensor to f32.
const READ_CHUNK: usize = 16 << 20;

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("files", &self.paths)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens `DIR/model.safetensors`, or every shard named by `DIR/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index)
                .with_context(|| format!("reading {}", index.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", index.display()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .with_context(|| format!("{}: no `weight_map` object", index.display()))?;
            let names: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                bail!(
                    "{}: neither model.safetensors nor model.safetensors.index.json found",
                    dir.display()
                );
            }
            vec![single]
        };
        let mut handles = Vec::new();
        let mut entries = BTreeMap::new();
        for (fi, path) in files.iter().enumerate() {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            // SAFETY: the snapshot is treated as read-only for the lifetime of the map; a file
            // truncated underneath would be a user error akin to deleting it mid-run.
            let map = unsafe { Mmap::map(&file) }
                .with_context(|| format!("memmapping {}", path.display()))?;
            for t in read_header(&map, path)? {
                let canon = canonical_name(&t.name);
                let e = Entry {
                    file: fi,
                    raw: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape,
                    start: t.start,
                    end: t.end,
                };
                if let Some(prev) = entries.insert(canon.clone(), e) {
                    bail!(
                        "{}: tensors `{}` and `{}` both map to `{canon}`",
                        path.display(),
                        prev.raw,
                        t.name
                    );
                }
            }
            drop(map);
            handles.push(file);
        }
        Ok(Self {
            paths: files,
            files: handles,
            entries,
        })
    }

    /// Canonical names present in the snapshot.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Checks names, shapes and dtypes against `expected`; one error lists every problem. A tied
    /// `lm_head.weight` stored anyway is accepted and ignored.
    pub fn validate(&self, expected: &BTreeMap<String, Vec<usize>>) -> Result<()> {
        let mut problems = Vec::new();
        for (name, shape) in expected {
            match self.entries.get(name) {
                None => problems.push(format!("missing `{name}` (shape {shape:?})")),
                Some(e) if &e.shape != shape => problems.push(format!(
                    "`{}` has shape {:?}, expected {shape:?}",
                    e.raw, e.shape
                )),
                Some(e) if !matches!(e.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) => problems
                    .push(format!(
                        "`{}` has dtype {:?} (only f32, f16, bf16)",
                        e.raw, e.dtype
                    )),
                _ => {}
            }
        }
        for (name, e) in &self.entries {
            if !expected.contains_key(name) && name != "lm_head.weight" {
                problems.push(format!("unexpected `{}`", e.raw));
            }
        }
        if !problems.is_empty() {
            let shown: Vec<_> = problems.iter().take(40).cloned().collect();
            bail!(
                "checkpoint {:?} does not match its config ({} problems):\n  {}{}",
                self.paths,
                problems.len(),
                shown.join("\n  "),
                if problems.len() > 40 { "\n  …" } else { "" }
            );
        }
        Ok(())
    }

    /// Reads one tensor by canonical name and converts it to f32.
    pub fn read(&self, name: &str) -> Result<HostTensor> {
        let e = self
            .entries
            .get(name)
            .with_context(|| format!("checkpoint has no tensor `{name}`"))?;
        let width = match e.dtype {
            Dtype::F32 => 4,
            Dtype::BF16 | Dtype::F16 => 2,
            other => bail!("`{}`: dtype {other:?} is not supported", e.raw),
        };
        let n: usize = e.shape.iter().product();
        if e.end - e.start != n * width {
            bail!(
                "`{}`: {} bytes for shape {:?} of {:?}",
                e.raw,
                e.end - e.start,
                e.shape,
                e.dtype
            );
        }
        let mut data = Vec::with_capacity(n);
        let mut buf = vec![0u8; READ_CHUNK.min(e.end - e.start)];
        let mut pos = e.start;
        while pos < e.end {
            let len = (e.end - pos).min(READ_CHUNK);
            self.files[e.file]
                .read_exact_at(&mut buf[..len], pos as u64)
                .with_context(|| {
                    format!("reading `{}` from {}", e.raw, self.paths[e.file].display())
                })?;
            extend_f32(&mut data, &buf[..len], e.dtype);
            pos += len;
        }
        Ok(HostTensor {
            shape: e.shape.clone(),
            data,
        })
    }
}

/// Appends the values of little-endian `bytes` of `dtype` (F32, BF16 or F16) as f32.
fn extend_f32(out: &mut Vec<f32>, bytes: &[u8], dtype: Dtype) {
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        Dtype::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        _ => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
    }
}

#[cfg(test)]
mod tests;

//! The whole Gemma 3 model (text decoder + optional SigLIP tower and projector), its loading from
//! a snapshot, the KV cache and the masked forward step shared by prefill, decode, no-cache
//! recomputation and teacher-forced scoring.
//!
//! Masks follow transformers (`masking_utils`, `create_masks_for_vision_model`) with slot indices
//! (positions in the padded, cached sequence): global layers allow `k ≤ q` or "same image block";
//! local layers additionally require `k > q − sliding_window`; padded keys are never visible. A
//! padded query row would be fully blocked, so it is allowed to see itself (its output is unused):
//! no backend ever sees an all-masked softmax row (NaN guard).

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::{Module, Param};
use burn::prelude::*;

use super::config::{LayerType, ModelConfig};
use super::text::{
    Attention, DecoderLayer, LayerCache, Mlp, RmsNorm, StepTables, TextModel, embed_scale,
    inv_freq, rope_tables_for_heads,
};
use super::token_logps::{Head, VOCAB_CHUNK};
use super::vision::{LayerNorm, Projector, VisionAttention, VisionLayer, VisionMlp, VisionTower};
use super::weights::{Checkpoint, DenseLoad, LoadHook, expected_tensors};

/// Gemma3ForConditionalGeneration / Gemma3ForCausalLM.
#[derive(Module, Debug)]
pub struct Gemma3<B: Backend> {
    /// Text decoder and tied head.
    pub language_model: TextModel<B>,
    /// SigLIP tower (absent for text-only checkpoints).
    pub vision_tower: Option<VisionTower<B>>,
    /// Projector (absent for text-only checkpoints).
    pub multi_modal_projector: Option<Projector<B>>,
    /// Parsed configuration.
    #[module(skip)]
    pub config: ModelConfig,
}

/// Host-side bookkeeping of the cached sequence, per batch row and slot.
#[derive(Debug, Clone, Default)]
pub struct SeqState {
    /// Whether each slot holds a real token (false = padding).
    pub valid: Vec<Vec<bool>>,
    /// Image block id of each slot (−1 = text or not bidirectional).
    pub block: Vec<Vec<i64>>,
    /// Position id the next real token of each row gets.
    pub next_pos: Vec<usize>,
}

/// Per-layer KV cache plus the slot bookkeeping.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// One entry per decoder layer.
    pub layers: Vec<LayerCache<B>>,
    /// Slot bookkeeping.
    pub state: SeqState,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `batch` rows.
    pub fn new(num_layers: usize, batch: usize) -> Self {
        Self {
            layers: vec![LayerCache::default(); num_layers],
            state: SeqState {
                valid: vec![Vec::new(); batch],
                block: vec![Vec::new(); batch],
                next_pos: vec![0; batch],
            },
        }
    }

    /// Rows in the cache.
    pub fn batch(&self) -> usize {
        self.state.valid.len()
    }

    /// Slots cached so far.
    pub fn len(&self) -> usize {
        self.state.valid.first().map_or(0, Vec::len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new cache whose row `i` is a copy of row `rows[i]` of this one: one prompt's prefill
    /// shared by G completions (`rows = [0; G]`), without recomputing it.
    pub fn fork(&self, rows: &[usize]) -> Self {
        let device_of = |t: &Tensor<B, 4>| t.device();
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let pick = |t: &Option<Tensor<B, 4>>| {
                    t.as_ref().map(|t| {
                        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
                        let idx = Tensor::<B, 1, Int>::from_data(
                            TensorData::new(idx, [rows.len()]),
                            &device_of(t),
                        );
                        t.clone().select(0, idx)
                    })
                };
                LayerCache {
                    k: pick(&l.k),
                    v: pick(&l.v),
                }
            })
            .collect();
        let s = &self.state;
        Self {
            layers,
            state: SeqState {
                valid: rows.iter().map(|&r| s.valid[r].clone()).collect(),
                block: rows.iter().map(|&r| s.block[r].clone()).collect(),
                next_pos: rows.iter().map(|&r| s.next_pos[r]).collect(),
            },
        }
    }
}

/// New tokens of one forward step, all rows the same length (left-pad beforehand).
#[derive(Debug, Clone)]
pub struct Step<B: Backend> {
    /// Token ids `[B][S]`.
    pub ids: Vec<Vec<u32>>,
    /// Real-token flags `[B][S]`; `None` = all real.
    pub valid: Option<Vec<Vec<bool>>>,
    /// Projector output for every image soft token of this step, in row-major order of
    /// appearance, `[n_image_tokens, hidden]`. When given, image tokens are replaced by it and
    /// each run of image tokens attends to itself bidirectionally.
    pub image_features: Option<Tensor<B, 2>>,
}

impl<B: Backend> Step<B> {
    /// A step of plain text tokens, no padding.
    pub fn text(ids: Vec<Vec<u32>>) -> Self {
        Self {
            ids,
            valid: None,
            image_features: None,
        }
    }
}

/// Which positions need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Every position of the step.
    All,
    /// Only the last position of each row (generation).
    Last,
}

impl<B: Backend> Gemma3<B> {
    /// Loads `DIR` (config.json + safetensors) with dense f32 projections.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        Self::load_with(dir, device, &mut DenseLoad)
    }

    /// Loads `DIR`, passing every projection through `hook` (e.g. NF4 quantization).
    pub fn load_with(dir: &Path, device: &B::Device, hook: &mut dyn LoadHook<B>) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        let ckpt = Checkpoint::open(dir)?;
        ckpt.validate(&expected_tensors(&config))
            .with_context(|| format!("loading {}", dir.display()))?;
        Self::from_checkpoint(config, &ckpt, device, hook)
    }

    /// Builds the model from a validated checkpoint, tensor by tensor.
    pub fn from_checkpoint(
        config: ModelConfig,
        ckpt: &Checkpoint,
        device: &B::Device,
        hook: &mut dyn LoadHook<B>,
    ) -> Result<Self> {
        let t = config.text.clone();
        let param1 =
            |name: &str| -> Result<Tensor<B, 1>> { Ok(ckpt.read(name)?.to_tensor::<B, 1>(device)) };
        let param2 =
            |name: &str| -> Result<Tensor<B, 2>> { Ok(ckpt.read(name)?.to_tensor::<B, 2>(device)) };
        let mut lin = |name: &str, bias: bool| {
            let w = ckpt.read(&format!("{name}.weight"))?;
            let b = if bias {
                Some(ckpt.read(&format!("{name}.bias"))?)
            } else {
                None
            };
            hook.linear(name, w, b, device)
                .with_context(|| format!("building `{name}`"))
        };
        let mut layers = Vec::with_capacity(t.num_hidden_layers);
        for (i, lt) in t.layer_types.iter().enumerate() {
            let p = format!("language_model.layers.{i}");
            let norm = |n: &str, eps| -> Result<RmsNorm<B>> {
                Ok(RmsNorm::new(param1(&format!("{p}.{n}.weight"))?, eps))
            };
            let self_attn = Attention {
                q_proj: lin(&format!("{p}.self_attn.q_proj"), false)?,
                k_proj: lin(&format!("{p}.self_attn.k_proj"), false)?,
                v_proj: lin(&format!("{p}.self_attn.v_proj"), false)?,
                o_proj: lin(&format!("{p}.self_attn.o_proj"), false)?,
                q_norm: norm("self_attn.q_norm", t.rms_norm_eps)?,
                k_norm: norm("self_attn.k_norm", t.rms_norm_eps)?,
                num_heads: t.num_attention_heads,
                num_kv_heads: t.num_key_value_heads,
                head_dim: t.head_dim,
                scale: t.query_pre_attn_scalar.powf(-0.5),
                // transformers' Gemma3Attention stores attn_logit_softcapping but never passes it
                // to the attention kernel (unlike Gemma 2), so the reference ignores it; so do we.
                softcap: 0.0,
            };
            let mlp = Mlp {
                gate_proj: lin(&format!("{p}.mlp.gate_proj"), false)?,
                up_proj: lin(&format!("{p}.mlp.up_proj"), false)?,
                down_proj: lin(&format!("{p}.mlp.down_proj"), false)?,
            };
            layers.push(DecoderLayer {
                self_attn,
                mlp,
                input_layernorm: norm("input_layernorm", t.rms_norm_eps)?,
                post_attention_layernorm: norm("post_attention_layernorm", t.rms_norm_eps)?,
                pre_feedforward_layernorm: norm("pre_feedforward_layernorm", t.rms_norm_eps)?,
                post_feedforward_layernorm: norm("post_feedforward_layernorm", t.rms_norm_eps)?,
                sliding: *lt == LayerType::Sliding,
            });
        }
        let language_model = TextModel {
            embed_tokens: Param::from_tensor(param2("language_model.embed_tokens.weight")?)
                .set_require_grad(false),
            layers,
            norm: RmsNorm::new(param1("language_model.norm.weight")?, t.rms_norm_eps),
            lm_head: if t.tie_word_embeddings {
                None
            } else {
                Some(Param::from_tensor(param2("lm_head.weight")?).set_require_grad(false))
            },
            embed_scale: embed_scale(&t),
            // Gemma3ForCausalLM applies final_logit_softcapping, Gemma3ForConditionalGeneration
            // does not (transformers 5.24); released Gemma 3 configs set it to null anyway.
            final_softcap: if config.vision.is_none() {
                t.final_logit_softcapping.unwrap_or(0.0)
            } else {
                0.0
            },
        };
        let (vision_tower, multi_modal_projector) = match &config.vision {
            None => (None, None),
            Some(v) => {
                let e = "vision_tower.embeddings";
                let pw = ckpt.read(&format!("{e}.patch_embedding.weight"))?;
                let k = pw.data.len() / v.hidden_size;
                let patch_weight =
                    Tensor::<B, 2>::from_data(TensorData::new(pw.data, [v.hidden_size, k]), device);
                let mut vlayers = Vec::new();
                for i in 0..v.num_hidden_layers {
                    let p = format!("vision_tower.encoder.layers.{i}");
                    let ln = |n: &str| -> Result<LayerNorm<B>> {
                        Ok(LayerNorm::new(
                            param1(&format!("{p}.{n}.weight"))?,
                            param1(&format!("{p}.{n}.bias"))?,
                            v.layer_norm_eps,
                        ))
                    };
                    vlayers.push(VisionLayer {
                        layer_norm1: ln("layer_norm1")?,
                        self_attn: VisionAttention {
                            q_proj: lin(&format!("{p}.self_attn.q_proj"), true)?,
                            k_proj: lin(&format!("{p}.self_attn.k_proj"), true)?,
                            v_proj: lin(&format!("{p}.self_attn.v_proj"), true)?,
                            out_proj: lin(&format!("{p}.self_attn.out_proj"), true)?,
                            num_heads: v.num_attention_heads,
                        },
                        layer_norm2: ln("layer_norm2")?,
                        mlp: VisionMlp {
                            fc1: lin(&format!("{p}.mlp.fc1"), true)?,
                            fc2: lin(&format!("{p}.mlp.fc2"), true)?,
                        },
                    });
                }
                let frozen1 = |x: Tensor<B, 1>| Param::from_tensor(x).set_require_grad(false);
                let frozen2 = |x: Tensor<B, 2>| Param::from_tensor(x).set_require_grad(false);
                let tower = VisionTower {
                    patch_weight: frozen2(patch_weight),
                    patch_bias: frozen1(param1(&format!("{e}.patch_embedding.bias"))?),
                    position_embedding: frozen2(param2(&format!("{e}.position_embedding.weight"))?),
                    layers: vlayers,
                    post_layernorm: LayerNorm::new(
                        param1("vision_tower.post_layernorm.weight")?,
                        param1("vision_tower.post_layernorm.bias")?,
                        v.layer_norm_eps,
                    ),
                    patch_size: v.patch_size,
                };
                let projector = Projector {
                    mm_input_projection_weight: frozen2(param2(
                        "multi_modal_projector.mm_input_projection_weight",
                    )?),
                    mm_soft_emb_norm: RmsNorm::new(
                        param1("multi_modal_projector.mm_soft_emb_norm.weight")?,
                        v.layer_norm_eps,
                    ),
                    patches_per_side: v.patches_per_side(),
                    tokens_per_side: (config.mm_tokens_per_image as f64).sqrt().round() as usize,
                };
                (Some(tower), Some(projector))
            }
        };
        Ok(Self {
            language_model,
            vision_tower,
            multi_modal_projector,
            config,
        })
    }

    /// Device of the weights.
    pub fn device(&self) -> B::Device {
        self.language_model.embed_tokens.val().device()
    }

    /// An empty KV cache for `batch` rows.
    pub fn new_cache(&self, batch: usize) -> KvCache<B> {
        KvCache::new(self.language_model.layers.len(), batch)
    }

    /// Image soft-token embeddings `[N, mm_tokens, hidden]` of normalized pixels `[N, 3, H, W]`.
    pub fn image_features(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let (Some(tower), Some(proj)) = (&self.vision_tower, &self.multi_modal_projector) else {
            bail!("this checkpoint is text-only: it has no vision tower");
        };
        Ok(proj.forward(tower.forward(pixels)))
    }

    /// Runs one step of new tokens, appending them to `cache`, and returns logits
    /// `[B, S or 1, vocab]`.
    pub fn forward(
        &self,
        step: &Step<B>,
        cache: &mut KvCache<B>,
        keep: Keep,
    ) -> Result<Tensor<B, 3>> {
        let h = self.forward_hidden(step, cache, keep)?;
        Ok(self.language_model.logits(h))
    }

    /// The LM head with `temperature`, for per-token log-probs in vocabulary chunks
    /// ([`super::token_logps`]) from [`Self::forward_hidden`]'s states.
    pub fn head(&self, temperature: f64) -> Head<B> {
        let lm = &self.language_model;
        Head {
            weight: lm.lm_head.as_ref().unwrap_or(&lm.embed_tokens).val(),
            temperature,
            softcap: lm.final_softcap,
            chunk: VOCAB_CHUNK,
        }
    }

    /// [`Self::forward`] up to the final norm: hidden states `[B, S or 1, hidden]`, what the
    /// LM head turns into logits.
    pub fn forward_hidden(
        &self,
        step: &Step<B>,
        cache: &mut KvCache<B>,
        keep: Keep,
    ) -> Result<Tensor<B, 3>> {
        let device = self.device();
        let b = step.ids.len();
        if b != cache.batch() {
            bail!("step has {b} rows but the cache has {}", cache.batch());
        }
        let s = step.ids.first().map_or(0, Vec::len);
        if s == 0 || step.ids.iter().any(|r| r.len() != s) {
            bail!("every row of a step needs the same, non-zero number of tokens");
        }
        let cfg = &self.config;
        let t = &cfg.text;
        let image_id = cfg.image_token_id;
        // Ids for the embedding lookup (an out-of-vocabulary image id becomes pad, like HF).
        let mut flat: Vec<i64> = Vec::with_capacity(b * s);
        for row in &step.ids {
            for &id in row {
                if id as usize >= t.vocab_size {
                    if id == image_id {
                        flat.push(t.pad_token_id as i64);
                    } else {
                        bail!("token id {id} is outside the vocabulary ({})", t.vocab_size);
                    }
                } else {
                    flat.push(id as i64);
                }
            }
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [b, s]), &device);
        let mut embeds = self.language_model.embed(ids);
        // Bookkeeping for the new slots.
        let past = cache.len();
        let mut new_blocks: Vec<Vec<i64>> = vec![vec![-1; s]; b];
        let mut positions = vec![vec![0usize; s]; b];
        for r in 0..b {
            let mut next_block = cache.state.block[r].iter().copied().max().unwrap_or(-1) + 1;
            let mut prev_image = false;
            for j in 0..s {
                let valid = step.valid.as_ref().is_none_or(|v| v[r][j]);
                let is_image = step.image_features.is_some() && step.ids[r][j] == image_id && valid;
                if is_image {
                    if !prev_image {
                        next_block += 1;
                    }
                    new_blocks[r][j] = next_block - 1;
                }
                prev_image = is_image;
                if valid {
                    positions[r][j] = cache.state.next_pos[r];
                    cache.state.next_pos[r] += 1;
                } else {
                    positions[r][j] = 1;
                }
            }
        }
        if let Some(feats) = &step.image_features {
            let n_img: usize = new_blocks.iter().flatten().filter(|&&x| x >= 0).count();
            let [m, d] = feats.dims();
            if m != n_img {
                bail!("{n_img} image tokens but {m} image feature rows");
            }
            let mut idx = Vec::with_capacity(b * s);
            let mut k = 0;
            for (r, row) in new_blocks.iter().enumerate() {
                for (j, &blk) in row.iter().enumerate() {
                    if blk >= 0 {
                        idx.push((b * s + k) as i64);
                        k += 1;
                    } else {
                        idx.push((r * s + j) as i64);
                    }
                }
            }
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [b * s]), &device);
            embeds = Tensor::cat(vec![embeds.reshape([b * s, d]), feats.clone()], 0)
                .select(0, idx)
                .reshape([b, s, d]);
        }
        for r in 0..b {
            for j in 0..s {
                cache.state.valid[r].push(step.valid.as_ref().is_none_or(|v| v[r][j]));
            }
            cache.state.block[r].extend_from_slice(&new_blocks[r]);
        }
        let total = past + s;
        let (mut full, mut sliding) = (
            Vec::with_capacity(b * s * total),
            Vec::with_capacity(b * s * total),
        );
        let w = t.sliding_window as i64;
        for r in 0..b {
            let valid = &cache.state.valid[r];
            let block = &cache.state.block[r];
            for qi in 0..s {
                let q = past + qi;
                let q_valid = valid[q];
                for k in 0..total {
                    let same_block = block[q] >= 0 && block[q] == block[k];
                    let base = valid[k] && (k <= q || same_block);
                    let win = (k as i64) > q as i64 - w;
                    let guard = !q_valid && k == q;
                    full.push(!(base || guard));
                    sliding.push(!((base && win) || guard));
                }
            }
        }
        let mask = |v: Vec<bool>| {
            Tensor::<B, 4, Bool>::from_data(TensorData::new(v, [b, 1, s, total]), &device)
        };
        let tables = StepTables {
            global_rope: rope_tables_for_heads(
                &inv_freq(&t.rope_global, t.head_dim),
                &positions,
                t.num_attention_heads,
                t.num_key_value_heads,
                &device,
            ),
            local_rope: rope_tables_for_heads(
                &inv_freq(&t.rope_local, t.head_dim),
                &positions,
                t.num_attention_heads,
                t.num_key_value_heads,
                &device,
            ),
            full_mask: mask(full),
            sliding_mask: mask(sliding),
        };
        let h = self
            .language_model
            .forward(embeds, &tables, Some(&mut cache.layers));
        Ok(match keep {
            Keep::All => h,
            Keep::Last => h.narrow(1, s - 1, 1),
        })
    }
}

#[cfg(test)]
mod tests;

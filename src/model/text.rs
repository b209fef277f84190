//! Gemma 3 text decoder (ref: transformers `models/gemma3/modeling_gemma3.py`): Gemma RMSNorm
//! `x·rsqrt(mean(x²)+eps)·(1+w)`, scaled embeddings, sandwich norms, q/k norms before RoPE, GQA,
//! `query_pre_attn_scalar^-0.5` scaling, local (sliding) and global layers with their own RoPE,
//! optional attention softcap. Field names follow the Hugging Face module paths
//! (`layers.N.self_attn.q_proj`) so quantization and LoRA can target them by suffix.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::config::{LayerType, RopeConfig, TextConfig};
use super::linear::Linear;

/// Gemma RMSNorm with the `(1 + w)` weight; computed in the tensor's float type (f32 here).
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Stored weight `w` (the effective scale is `1 + w`).
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Wraps a loaded weight (frozen).
    pub fn new(weight: Tensor<B, 1>, eps: f64) -> Self {
        Self {
            weight: Param::from_tensor(weight).set_require_grad(false),
            eps,
        }
    }

    /// Normalizes over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // `x * x`, not `powi_scalar(2)`: the CPU backend runs powi through `powf` per element.
        let ms = (x.clone() * x.clone()).mean_dim(D - 1);
        let scale = self.weight.val().add_scalar(1.0).unsqueeze::<D>();
        x * (ms.add_scalar(self.eps)).sqrt().recip() * scale
    }
}

/// `gelu` with the tanh approximation (`gelu_pytorch_tanh`):
/// `0.5·x·(1 + tanh(z)) = x·sigmoid(2z)`, `z = √(2/π)·(x + 0.044715·x³)`.
///
/// Computed in the `x·sigmoid(2z)` form (the same function; the rounding differs from torch's
/// fused kernel by a few ulp, far inside the parity tolerances): the CPU backend evaluates
/// `tanh` with libm's `tanhf` per element, which cost ~15% of a GRPO training step, while its
/// sigmoid needs one `expf`. The cube is two products, as torch's kernel writes it, not
/// `powi_scalar(3)`, which the CPU backend runs through `powf` per element.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let two_c = 2.0 * (2.0f64 / std::f64::consts::PI).sqrt();
    let cube = x.clone() * x.clone() * x.clone();
    let z2 = (x.clone() + cube.mul_scalar(0.044715)).mul_scalar(two_c);
    x * burn::tensor::activation::sigmoid(z2)
}

/// Gemma MLP: `down(gelu_tanh(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Gate projection.
    pub gate_proj: Linear<B>,
    /// Up projection.
    pub up_proj: Linear<B>,
    /// Down projection.
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// Applies the gated MLP.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let g = gelu_tanh(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(g * self.up_proj.forward(x))
    }
}

/// RoPE inverse frequencies like transformers: `1 / theta^(2i/d)` in f32, divided by the linear
/// scaling factor.
pub fn inv_freq(rope: &RopeConfig, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            let f = 1.0f32 / (rope.theta as f32).powf(exponent);
            f / rope.linear_factor as f32
        })
        .collect()
}

/// cos/sin tables of one RoPE kind, laid out `[B, S, heads, head_dim]` (the projections'
/// own layout, before the heads are moved forward) and materialised per head for the query
/// heads (`q`) and the key heads (`k`). Why not broadcast `[B, 1, S, hd]` tables: the CPU
/// backend multiplies same-shape contiguous tensors with SIMD but walks a broadcast or
/// permuted operand element by element (~20% of a training step before). The sine table has
/// its first half negated so that `rotate_half(x)·sin = cat(x₂, x₁)·sin'` needs no `neg`.
#[derive(Debug, Clone)]
pub struct RopeTables<B: Backend> {
    /// (cos, signed sin) `[B, S, num_heads, hd]`.
    pub q: (Tensor<B, 4>, Tensor<B, 4>),
    /// (cos, signed sin) `[B, S, num_kv_heads, hd]`.
    pub k: (Tensor<B, 4>, Tensor<B, 4>),
}

/// [`RopeTables`] for the given positions (`positions[b][s]`).
pub fn rope_tables_for_heads<B: Backend>(
    inv_freq: &[f32],
    positions: &[Vec<usize>],
    num_heads: usize,
    num_kv_heads: usize,
    device: &B::Device,
) -> RopeTables<B> {
    let b = positions.len();
    let s = positions.first().map_or(0, Vec::len);
    let half = inv_freq.len();
    let hd = half * 2;
    let mut cos_row = Vec::with_capacity(b * s * hd);
    let mut sin_row = Vec::with_capacity(b * s * hd);
    for row in positions {
        for &p in row {
            for sign in [-1.0f32, 1.0] {
                for &f in inv_freq {
                    let a = p as f32 * f;
                    cos_row.push(a.cos());
                    sin_row.push(sign * a.sin());
                }
            }
        }
    }
    let per_heads = |rows: &[f32], heads: usize| {
        let mut out = Vec::with_capacity(rows.len() * heads);
        for pos in rows.chunks(hd) {
            for _ in 0..heads {
                out.extend_from_slice(pos);
            }
        }
        Tensor::<B, 4>::from_data(TensorData::new(out, [b, s, heads, hd]), device)
    };
    RopeTables {
        q: (
            per_heads(&cos_row, num_heads),
            per_heads(&sin_row, num_heads),
        ),
        k: (
            per_heads(&cos_row, num_kv_heads),
            per_heads(&sin_row, num_kv_heads),
        ),
    }
}

/// Applies RoPE to `[B, S, heads, hd]` with [`RopeTables`] of the same shape (cos and the
/// signed sin): `x·cos + rotate_half(x)·sin` with the sign folded into the table.
pub fn apply_rope_signed<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin_signed: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let d = x.dims()[3];
    let swapped = Tensor::cat(
        vec![
            x.clone().narrow(3, d / 2, d / 2),
            x.clone().narrow(3, 0, d / 2),
        ],
        3,
    );
    x * cos.clone() + swapped * sin_signed.clone()
}

/// Keys and values of one layer for the tokens seen so far: `[B, kv_heads, T, hd]`.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    /// Cached keys (after k_norm and RoPE).
    pub k: Option<Tensor<B, 4>>,
    /// Cached values.
    pub v: Option<Tensor<B, 4>>,
}

impl<B: Backend> Default for LayerCache<B> {
    fn default() -> Self {
        Self { k: None, v: None }
    }
}

/// Gemma 3 self-attention.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub o_proj: Linear<B>,
    /// RMSNorm over each query head.
    pub q_norm: RmsNorm<B>,
    /// RMSNorm over each key head.
    pub k_norm: RmsNorm<B>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
    /// Score scale (`query_pre_attn_scalar^-0.5`).
    pub scale: f64,
    /// Attention softcap; 0 means none.
    pub softcap: f64,
}

impl<B: Backend> Attention<B> {
    /// `x`: `[B, S, D]`; `mask`: `[B, 1, S, T]` with `true` = blocked, T = cached + S keys. When
    /// `cache` is given the new keys/values are appended to it.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        mask: Tensor<B, 4, Bool>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let hd = self.head_dim;
        // Norm and RoPE in the projections' contiguous `[B, S, heads, hd]` layout (both act
        // per head and position), then heads forward.
        let q = self
            .q_proj
            .forward(x.clone())
            .reshape([b, s, self.num_heads, hd]);
        let k = self
            .k_proj
            .forward(x.clone())
            .reshape([b, s, self.num_kv_heads, hd]);
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, s, self.num_kv_heads, hd])
            .swap_dims(1, 2);
        let q = apply_rope_signed(self.q_norm.forward(q), &rope.q.0, &rope.q.1).swap_dims(1, 2);
        let k = apply_rope_signed(self.k_norm.forward(k), &rope.k.0, &rope.k.1).swap_dims(1, 2);
        let (k, v) = match cache {
            Some(c) => {
                let k = match c.k.take() {
                    Some(prev) => Tensor::cat(vec![prev, k], 2),
                    None => k,
                };
                let v = match c.v.take() {
                    Some(prev) => Tensor::cat(vec![prev, v], 2),
                    None => v,
                };
                c.k = Some(k.clone());
                c.v = Some(v.clone());
                (k, v)
            }
            None => (k, v),
        };
        let rep = self.num_heads / self.num_kv_heads;
        let options = AttentionModuleOptions {
            scale: Some(self.scale),
            softcap: (self.softcap > 0.0).then_some(self.softcap),
            is_causal: false,
        };
        // GQA without copying K/V: the `rep` query heads that share a KV head (query head h uses
        // KV head h / rep, like transformers' repeat_kv) are stacked along the query axis.
        let t = k.dims()[2];
        let q = q.reshape([b, self.num_kv_heads, rep * s, hd]);
        let mask = if rep == 1 {
            mask
        } else {
            mask.unsqueeze_dim::<5>(2)
                .expand([b, 1, rep, s, t])
                .reshape([b, 1, rep * s, t])
        };
        let out = attention(q, k, v, Some(mask), None, options).reshape([b, self.num_heads, s, hd]);
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([b, s, self.num_heads * hd]))
    }
}

/// One decoder block with Gemma's sandwich norms.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Self-attention.
    pub self_attn: Attention<B>,
    /// Gated MLP.
    pub mlp: Mlp<B>,
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Norm after attention, before the residual add.
    pub post_attention_layernorm: RmsNorm<B>,
    /// Norm before the MLP.
    pub pre_feedforward_layernorm: RmsNorm<B>,
    /// Norm after the MLP, before the residual add.
    pub post_feedforward_layernorm: RmsNorm<B>,
    /// Whether this is a local (sliding-window) layer.
    pub sliding: bool,
}

impl<B: Backend> DecoderLayer<B> {
    /// Runs the block.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        mask: Tensor<B, 4, Bool>,
        cache: Option<&mut LayerCache<B>>,
    ) -> Tensor<B, 3> {
        let h = self
            .self_attn
            .forward(self.input_layernorm.forward(x.clone()), rope, mask, cache);
        let x = x + self.post_attention_layernorm.forward(h);
        let h = self
            .mlp
            .forward(self.pre_feedforward_layernorm.forward(x.clone()));
        x + self.post_feedforward_layernorm.forward(h)
    }
}

/// The decoder stack with its (tied) embedding.
#[derive(Module, Debug)]
pub struct TextModel<B: Backend> {
    /// Token embedding `[vocab, hidden]`, also the LM head when tied.
    pub embed_tokens: Param<Tensor<B, 2>>,
    /// Decoder blocks.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
    /// Separate LM head `[vocab, hidden]` when not tied.
    pub lm_head: Option<Param<Tensor<B, 2>>>,
    /// `sqrt(hidden)` rounded to f32, as transformers casts it to the weight dtype.
    pub embed_scale: f64,
    /// Final logit softcap; 0 means none.
    pub final_softcap: f64,
}

impl<B: Backend> TextModel<B> {
    /// Scaled embeddings of `ids` (`[B, S]`).
    pub fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        burn::tensor::module::embedding(self.embed_tokens.val(), ids).mul_scalar(self.embed_scale)
    }

    /// Logits `[B, S, vocab]` of final hidden states (already normalized by `norm`), through the
    /// `[vocab, hidden]` head as `x · Wᵀ` (DESIGN §6), with the final softcap if configured.
    pub fn logits(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d] = h.dims();
        let w = match &self.lm_head {
            Some(w) => w.val(),
            None => self.embed_tokens.val(),
        };
        let vocab = w.dims()[0];
        let logits = super::linear::x_times_wt(h.reshape([b * s, d]), w).reshape([b, s, vocab]);
        if self.final_softcap > 0.0 {
            logits
                .div_scalar(self.final_softcap)
                .tanh()
                .mul_scalar(self.final_softcap)
        } else {
            logits
        }
    }
}

/// Per-layer-type inputs of one forward step: RoPE tables and attention masks.
#[derive(Debug, Clone)]
pub struct StepTables<B: Backend> {
    /// RoPE tables for global layers.
    pub global_rope: RopeTables<B>,
    /// RoPE tables for local layers.
    pub local_rope: RopeTables<B>,
    /// Mask for global layers `[B, 1, S, T]` (`true` = blocked).
    pub full_mask: Tensor<B, 4, Bool>,
    /// Mask for local layers.
    pub sliding_mask: Tensor<B, 4, Bool>,
}

impl<B: Backend> TextModel<B> {
    /// Runs embeddings through every block and the final norm; appends to `cache` when given.
    pub fn forward(
        &self,
        embeds: Tensor<B, 3>,
        tables: &StepTables<B>,
        mut cache: Option<&mut Vec<LayerCache<B>>>,
    ) -> Tensor<B, 3> {
        let mut x = embeds;
        for (i, layer) in self.layers.iter().enumerate() {
            let (rope, mask) = if layer.sliding {
                (&tables.local_rope, tables.sliding_mask.clone())
            } else {
                (&tables.global_rope, tables.full_mask.clone())
            };
            let c = cache.as_mut().map(|c| &mut c[i]);
            x = layer.forward(x, rope, mask, c);
        }
        self.norm.forward(x)
    }
}

/// Helper for the builder: whether a layer type is local.
pub fn is_sliding(t: LayerType) -> bool {
    t == LayerType::Sliding
}

/// The scale transformers applies to embeddings: `sqrt(hidden)` as an f32.
pub fn embed_scale(cfg: &TextConfig) -> f64 {
    ((cfg.hidden_size as f64).sqrt() as f32) as f64
}

//! SigLIP vision tower and Gemma 3 multimodal projector (ref: transformers
//! `models/siglip/modeling_siglip.py`, `Gemma3MultiModalProjector`): patch "conv" (stride =
//! kernel, so a matmul over flattened patches), learned positions, pre-LN encoder with biased
//! projections and gelu_tanh MLP, post-LN; projector = average pool of the patch grid to
//! `mm_tokens_per_image`, Gemma RMSNorm, matmul with `mm_input_projection_weight` `[in, out]`.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::linear::Linear;
use super::text::{RmsNorm, gelu_tanh};

/// Standard LayerNorm with bias (biased variance), as `nn.LayerNorm`.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Wraps loaded tensors (frozen).
    pub fn new(weight: Tensor<B, 1>, bias: Tensor<B, 1>, eps: f64) -> Self {
        Self {
            weight: Param::from_tensor(weight).set_require_grad(false),
            bias: Param::from_tensor(bias).set_require_grad(false),
            eps,
        }
    }

    /// Normalizes over the last dimension.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let mean = x.clone().mean_dim(2);
        let xc = x - mean;
        let var = xc.clone().powi_scalar(2).mean_dim(2);
        xc / var.add_scalar(self.eps).sqrt() * self.weight.val().unsqueeze::<3>()
            + self.bias.val().unsqueeze::<3>()
    }
}

/// SigLIP attention (biased q/k/v/out, `head_dim^-0.5`, no mask).
#[derive(Module, Debug)]
pub struct VisionAttention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub out_proj: Linear<B>,
    /// Heads.
    pub num_heads: usize,
}

impl<B: Backend> VisionAttention<B> {
    /// Full bidirectional attention over the patches.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let hd = d / self.num_heads;
        let split = |t: Tensor<B, 3>| t.reshape([b, s, self.num_heads, hd]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let options = AttentionModuleOptions {
            scale: Some((hd as f64).powf(-0.5)),
            softcap: None,
            is_causal: false,
        };
        let out = attention(q, k, v, None, None, options);
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([b, s, d]))
    }
}

/// SigLIP MLP: `fc2(gelu_tanh(fc1(x)))`.
#[derive(Module, Debug)]
pub struct VisionMlp<B: Backend> {
    /// First projection.
    pub fc1: Linear<B>,
    /// Second projection.
    pub fc2: Linear<B>,
}

/// One pre-LN encoder layer.
#[derive(Module, Debug)]
pub struct VisionLayer<B: Backend> {
    /// Norm before attention.
    pub layer_norm1: LayerNorm<B>,
    /// Attention.
    pub self_attn: VisionAttention<B>,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm<B>,
    /// MLP.
    pub mlp: VisionMlp<B>,
}

impl<B: Backend> VisionLayer<B> {
    /// Runs the layer.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        let h = self.mlp.fc2.forward(gelu_tanh(
            self.mlp.fc1.forward(self.layer_norm2.forward(x.clone())),
        ));
        x + h
    }
}

/// The tower: patch embedding, positions, encoder, post-LN.
#[derive(Module, Debug)]
pub struct VisionTower<B: Backend> {
    /// Patch conv weight flattened to `[hidden, channels·patch·patch]` (dense, not a projection
    /// that NF4 would quantize).
    pub patch_weight: Param<Tensor<B, 2>>,
    /// Patch conv bias.
    pub patch_bias: Param<Tensor<B, 1>>,
    /// Learned position embeddings `[patches, hidden]`.
    pub position_embedding: Param<Tensor<B, 2>>,
    /// Encoder layers.
    pub layers: Vec<VisionLayer<B>>,
    /// Final LayerNorm.
    pub post_layernorm: LayerNorm<B>,
    /// Patch side.
    pub patch_size: usize,
}

impl<B: Backend> VisionTower<B> {
    /// `pixels`: `[N, C, H, W]` normalized to [-1, 1]; returns `[N, patches, hidden]`.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, c, h, w] = pixels.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        let patches = pixels
            .reshape([n, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n * gh * gw, c * p * p]);
        let d = self.patch_weight.dims()[0];
        let x = patches.matmul(self.patch_weight.val().transpose())
            + self.patch_bias.val().unsqueeze::<2>();
        let mut x = x.reshape([n, gh * gw, d]) + self.position_embedding.val().unsqueeze::<3>();
        for layer in &self.layers {
            x = layer.forward(x);
        }
        self.post_layernorm.forward(x)
    }
}

/// Gemma 3 multimodal projector.
#[derive(Module, Debug)]
pub struct Projector<B: Backend> {
    /// `[vision_hidden, text_hidden]`, applied as `x · W` (a plain parameter, kept dense).
    pub mm_input_projection_weight: Param<Tensor<B, 2>>,
    /// Gemma RMSNorm over pooled vision states.
    pub mm_soft_emb_norm: RmsNorm<B>,
    /// Patches per side of the tower's grid.
    pub patches_per_side: usize,
    /// Output tokens per side (`sqrt(mm_tokens_per_image)`).
    pub tokens_per_side: usize,
}

impl<B: Backend> Projector<B> {
    /// `[N, patches, vision_hidden]` → `[N, mm_tokens, text_hidden]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, _, d] = x.dims();
        let (g, t) = (self.patches_per_side, self.tokens_per_side);
        let k = g / t;
        // Patch index = row·g + col with row = r1·k + r2, col = c1·k + c2.
        let pooled = x
            .reshape([n, t, k, t, k, d])
            .mean_dim(4)
            .mean_dim(2)
            .reshape([n, t * t, d]);
        let normed = self.mm_soft_emb_norm.forward(pooled);
        let w = self.mm_input_projection_weight.val();
        let out = w.dims()[1];
        normed
            .reshape([n * t * t, d])
            .matmul(w)
            .reshape([n, t * t, out])
    }
}

//! LoRA on a dense or NF4 base, PEFT-compatible (ref: peft `tuners/lora/layer.py`):
//! `y = base(x) + scaling · B(A(dropout(x)))` with `scaling = alpha / r` (`alpha / √r` with
//! rslora), `A: [r, in]` initialised like PEFT's `kaiming_uniform_(A, a=√5)` — whose bound is
//! `gain · √(3 / fan_in)` with `gain = √(2 / (1 + 5)) = √(1/3)`, i.e. exactly `1/√in` — and
//! `B: [out, r] = 0`. Dropout applies to the LoRA input only and only in training; its mask comes
//! from a ChaCha8 generator seeded by the caller (per step/item) and the layer's own stream id,
//! so a run is reproducible at any parallelism. Only `A` and `B` are trainable parameters.

use burn::module::{Module, Param};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::quant::nf4_linear::Nf4Linear;

/// LoRA hyper-parameters (PEFT `LoraConfig` names).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSettings {
    /// Rank `r`.
    pub r: usize,
    /// `lora_alpha`.
    pub alpha: f64,
    /// `lora_dropout` probability on the LoRA input.
    pub dropout: f64,
    /// `use_rslora`: scale by `alpha / √r` instead of `alpha / r`.
    pub use_rslora: bool,
}

impl LoraSettings {
    /// The factor applied to `B(A(x))`, as PEFT's `update_layer` computes it.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }
}

/// Whether the LoRA branch runs in training mode (dropout on, with a seed) or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraMode {
    /// Inference / log-prob computation: no dropout.
    Eval,
    /// Training: dropout masks drawn from `seed` (derive it from run seed, step and item).
    Train {
        /// Per-call seed; the layer mixes in its own stream id.
        seed: u64,
    },
}

thread_local! {
    static TRAIN_DROPOUT_SEED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    static ADAPTERS_DISABLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every LoRA adapter bypassed (`y = base(x)`) for each [`LoraLinear::forward`]
/// on this thread: the reference model of GRPO's KL term, as PEFT's `disable_adapter()` context
/// gives it to TRL for a PEFT model (no second copy of the weights). A thread-local for the same
/// reason as [`with_train_dropout`]: the model keeps one forward path. Nesting restores the outer
/// state on exit, also on panic.
pub fn with_adapters_disabled<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            ADAPTERS_DISABLED.with(|s| s.set(self.0));
        }
    }
    let _reset = Reset(ADAPTERS_DISABLED.with(|s| s.replace(true)));
    f()
}

/// Whether the calling thread runs inside [`with_adapters_disabled`].
pub fn adapters_disabled() -> bool {
    ADAPTERS_DISABLED.with(|s| s.get())
}

/// Runs `f` with LoRA dropout on (training mode, masks drawn from `seed` mixed with each
/// layer's stream id) for every [`LoraLinear::forward`] on this thread. Why a thread-local: the
/// model's forward stays one code path for sampling (eval, other threads) and the learner's
/// loss forward (train, as PEFT in `model.train()`, which TRL keeps since `disable_dropout` is
/// off), without threading a mode through every module.
pub fn with_train_dropout<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    struct Reset(Option<u64>);
    impl Drop for Reset {
        fn drop(&mut self) {
            TRAIN_DROPOUT_SEED.with(|s| s.set(self.0));
        }
    }
    let _reset = Reset(TRAIN_DROPOUT_SEED.with(|s| s.replace(Some(seed))));
    f()
}

/// A stable 64-bit id from a module name, so each layer draws its own init and dropout stream.
pub fn stream_id(name: &str) -> u64 {
    let h = Sha256::digest(name.as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}

/// The trainable low-rank pair of one layer.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `lora_A.weight`, `[r, in]`.
    pub lora_a: Param<Tensor<B, 2>>,
    /// `lora_B.weight`, `[out, r]`.
    pub lora_b: Param<Tensor<B, 2>>,
    /// `alpha / r` (or `alpha / √r`).
    #[module(skip)]
    pub scaling: f64,
    /// Dropout probability on the LoRA input.
    #[module(skip)]
    pub dropout: f64,
    /// Stream id mixed into dropout seeds (see [`stream_id`]).
    #[module(skip)]
    pub stream: u64,
}

impl<B: Backend> LoraAdapter<B> {
    /// PEFT's default init: `A ~ U(-1/√in, 1/√in)` from a ChaCha8 generator seeded with
    /// `(seed, stream)`, `B = 0`.
    pub fn init(
        in_features: usize,
        out_features: usize,
        settings: &LoraSettings,
        seed: u64,
        stream: u64,
        device: &B::Device,
    ) -> Self {
        let bound = 1.0 / (in_features as f64).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ stream.rotate_left(17));
        let a: Vec<f32> = (0..settings.r * in_features)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let a = Tensor::from_data(TensorData::new(a, [settings.r, in_features]), device);
        let b = Tensor::zeros([out_features, settings.r], device);
        Self::from_tensors(a, b, settings.scaling(), settings.dropout, stream)
    }

    /// Wraps given `A [r, in]` and `B [out, r]` (loading an adapter).
    pub fn from_tensors(
        a: Tensor<B, 2>,
        b: Tensor<B, 2>,
        scaling: f64,
        dropout: f64,
        stream: u64,
    ) -> Self {
        assert_eq!(a.dims()[0], b.dims()[1], "LoRA rank of A and B differ");
        Self {
            lora_a: Param::from_tensor(a),
            lora_b: Param::from_tensor(b),
            scaling,
            dropout,
            stream,
        }
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.lora_a.dims()[0]
    }

    /// `scaling · B(A(dropout(x)))` for `x [rows, in]`.
    pub fn delta(&self, x: Tensor<B, 2>, mode: LoraMode) -> Tensor<B, 2> {
        let x = match mode {
            LoraMode::Train { seed } if self.dropout > 0.0 => {
                let mask = self.dropout_mask(x.dims(), seed, &x.device());
                x * mask
            }
            _ => x,
        };
        let h = x.matmul(self.lora_a.val().transpose());
        h.matmul(self.lora_b.val().transpose())
            .mul_scalar(self.scaling)
    }

    /// Inverted-dropout mask: 0 with probability p, else `1/(1-p)`.
    fn dropout_mask(&self, dims: [usize; 2], seed: u64, device: &B::Device) -> Tensor<B, 2> {
        let p = self.dropout;
        let keep = (1.0 / (1.0 - p)) as f32;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ self.stream);
        let m: Vec<f32> = (0..dims[0] * dims[1])
            .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
            .collect();
        Tensor::from_data(TensorData::new(m, dims), device)
    }

    /// `scaling · B · A`, the dense update a merge adds to the base weight, `[out, in]`.
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        self.lora_b
            .val()
            .matmul(self.lora_a.val())
            .mul_scalar(self.scaling)
    }
}

/// A dense frozen Linear (`weight [out, in]`, optional bias), the non-quantized base.
#[derive(Module, Debug)]
pub struct DenseLinear<B: Backend> {
    /// Weight `[out, in]`, frozen.
    pub weight: Param<Tensor<B, 2>>,
    /// Bias `[out]`, frozen.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> DenseLinear<B> {
    /// Wraps tensors as a frozen layer.
    pub fn new(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight).set_require_grad(false),
            bias: bias.map(|b| Param::from_tensor(b).set_require_grad(false)),
        }
    }

    /// `x [rows, in] -> [rows, out]`.
    pub fn forward_2d(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = crate::model::linear::x_times_wt(x, self.weight.val());
        match &self.bias {
            Some(b) => y + b.val().unsqueeze_dim::<2>(0),
            None => y,
        }
    }
}

/// The frozen base of a projection: dense or NF4.
#[derive(Module, Debug)]
pub enum LinearBase<B: Backend> {
    /// bf16/f32 weight.
    Dense(DenseLinear<B>),
    /// NF4 weight.
    Nf4(Nf4Linear<B>),
}

impl<B: Backend> LinearBase<B> {
    /// Input width.
    pub fn in_features(&self) -> usize {
        match self {
            Self::Dense(d) => d.weight.dims()[1],
            Self::Nf4(q) => q.in_features(),
        }
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        match self {
            Self::Dense(d) => d.weight.dims()[0],
            Self::Nf4(q) => q.out_features(),
        }
    }

    /// `x [rows, in] -> [rows, out]`.
    pub fn forward_2d(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Self::Dense(d) => d.forward_2d(x),
            Self::Nf4(q) => q.forward_2d(x),
        }
    }

    /// The weight as a dense tensor (dequantized on `device` for NF4).
    pub fn dense_weight(&self, device: &B::Device) -> Tensor<B, 2> {
        match self {
            Self::Dense(d) => d.weight.val(),
            Self::Nf4(q) => q.dequantize(device),
        }
    }
}

/// A projection with an optional LoRA adapter: what every Linear of the model is
/// (`crate::model::linear::Linear` is this type).
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// Frozen base.
    pub base: LinearBase<B>,
    /// Trainable adapter, if this module is a target.
    pub lora: Option<LoraAdapter<B>>,
}

impl<B: Backend> LoraLinear<B> {
    /// A dense frozen layer without adapter (`weight [out, in]`, optional bias).
    pub fn new(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        Self::from_base(LinearBase::Dense(DenseLinear::new(weight, bias)))
    }

    /// A base without adapter.
    pub fn from_base(base: LinearBase<B>) -> Self {
        Self { base, lora: None }
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.base.in_features()
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.base.out_features()
    }

    /// Applies the layer to the last dimension of `x`: eval mode (no LoRA dropout), unless
    /// the calling thread runs inside [`with_train_dropout`] (the learner's loss forward); the
    /// base alone inside [`with_adapters_disabled`] (the reference model).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if self.lora.is_some() && adapters_disabled() {
            let dims = x.dims();
            let rows: usize = dims[..D - 1].iter().product();
            let y = self.base.forward_2d(x.reshape([rows, dims[D - 1]]));
            let mut out = dims;
            out[D - 1] = self.base.out_features();
            return y.reshape(out);
        }
        let mode = TRAIN_DROPOUT_SEED
            .with(|s| s.get())
            .map_or(LoraMode::Eval, |seed| LoraMode::Train { seed });
        self.forward_mode(x, mode)
    }

    /// Adds a freshly initialised adapter (PEFT init) with the given settings.
    pub fn with_new_adapter(
        mut self,
        settings: &LoraSettings,
        seed: u64,
        stream: u64,
        device: &B::Device,
    ) -> Self {
        self.lora = Some(LoraAdapter::init(
            self.base.in_features(),
            self.base.out_features(),
            settings,
            seed,
            stream,
            device,
        ));
        self
    }

    /// Applies the layer to the last dimension of `x` (any rank ≥ 1); `mode` switches LoRA
    /// dropout on for training.
    pub fn forward_mode<const D: usize>(&self, x: Tensor<B, D>, mode: LoraMode) -> Tensor<B, D> {
        let dims = x.dims();
        let inner = dims[D - 1];
        let rows: usize = dims[..D - 1].iter().product();
        let x2 = x.reshape([rows, inner]);
        let mut y = self.base.forward_2d(x2.clone());
        if let Some(l) = &self.lora {
            y = y + l.delta(x2, mode);
        }
        let mut out = dims;
        out[D - 1] = self.base.out_features();
        y.reshape(out)
    }

    /// The base weight with the adapter merged in (`W + scaling · B · A`), for export.
    pub fn merged_weight(&self, device: &B::Device) -> Tensor<B, 2> {
        let w = self.base.dense_weight(device);
        match &self.lora {
            Some(l) => w + l.delta_weight(),
            None => w,
        }
    }
}

#[cfg(test)]
mod tests;

//! The one projection type of the model: every q/k/v/o/gate/up/down of the text decoder and every
//! q/k/v/out/fc1/fc2 of the SigLIP tower goes through [`Linear`], so quantization (NF4) and
//! adapters (LoRA) can later be added in this single place.

use burn::module::{Module, Param};
use burn::prelude::*;

use super::weights::HostTensor;

/// `y = x · Wᵀ + b` with the weight kept in PyTorch's `[out, in]` layout (DESIGN §6: streaming a
/// `[out, in]` weight through `matmul(w.transpose())` is the fast path on CPU, and it keeps the
/// checkpoint layout for quantization and PEFT key names).
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// Weight `[out_features, in_features]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Optional bias `[out_features]` (SigLIP has them, the Gemma decoder does not).
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    /// Wraps existing tensors; the base weights are frozen (no gradient), as the trainer only
    /// learns adapters.
    pub fn new(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight).set_require_grad(false),
            bias: bias.map(|b| Param::from_tensor(b).set_require_grad(false)),
        }
    }

    /// Builds a dense layer from host tensors read from a checkpoint.
    pub fn from_host(weight: HostTensor, bias: Option<HostTensor>, device: &B::Device) -> Self {
        Self::new(
            weight.to_tensor::<B, 2>(device),
            bias.map(|b| b.to_tensor::<B, 1>(device)),
        )
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Applies the projection to the last dimension of `x` (any rank ≥ 1).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let inner = dims[D - 1];
        let rows: usize = dims[..D - 1].iter().product();
        let w = self.weight.val();
        let y = x.reshape([rows, inner]).matmul(w.transpose());
        let y = match &self.bias {
            Some(b) => y + b.val().unsqueeze_dim::<2>(0),
            None => y,
        };
        let mut out = dims;
        out[D - 1] = self.out_features();
        y.reshape(out)
    }
}

//! A frozen NF4 linear layer for burn: `y = x · dequant(W)ᵀ + b`.
//!
//! The packed weight lives in host memory as an [`Nf4Tensor`] behind an `Arc`, in a field the
//! module system skips (`#[module(skip)]`): it is not a `Param`, so burn's autodiff never tracks it,
//! optimizers never see it (no gradient, no optimizer state) and records do not copy it. The bias,
//! if any, is a `Param` marked `require_grad = false`.
//!
//! Forward dequantizes the weight to f32 in chunks of output rows (bounding the transient memory
//! to `chunk_rows × in` floats) and multiplies each chunk, then concatenates the outputs. The
//! single place that turns packed codes into a compute tensor is [`Nf4Linear::dequantize_rows`]:
//! it is the seam for a device-side dequantization or a fused 4-bit GEMM kernel on CUDA. Note
//! that under autodiff burn keeps each dequantized chunk alive until backward (it is the right
//! operand of a matmul whose left operand needs a gradient); a custom backward that re-dequantizes
//! would bound that too, as bitsandbytes' `MatMul4Bit` does.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::prelude::*;

use super::nf4::{Nf4Config, Nf4Tensor, WeightSlice, quantize};

/// Default bound on one dequantized chunk: 4 Mi values (16 MiB of f32).
pub const DEFAULT_CHUNK_VALUES: usize = 4 << 20;

/// A Linear layer whose weight `[out, in]` is stored in NF4 and frozen.
#[derive(Module, Debug)]
pub struct Nf4Linear<B: Backend> {
    /// Packed NF4 weight `[out_features, in_features]`, host side, shared, never trained.
    #[module(skip)]
    pub weight: Arc<Nf4Tensor>,
    /// Optional bias `[out_features]`, frozen.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Output rows dequantized at once.
    #[module(skip)]
    pub chunk_rows: usize,
}

impl<B: Backend> Nf4Linear<B> {
    /// Wraps an already quantized 2-D weight (e.g. loaded from a bitsandbytes checkpoint).
    pub fn new(weight: Nf4Tensor, bias: Option<Tensor<B, 1>>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            weight.shape.len() == 2,
            "Nf4Linear needs a 2-D weight, got shape {:?}",
            weight.shape
        );
        if let Some(b) = &bias {
            anyhow::ensure!(
                b.dims()[0] == weight.shape[0],
                "bias has {} values for {} output features",
                b.dims()[0],
                weight.shape[0]
            );
        }
        let chunk_rows = (DEFAULT_CHUNK_VALUES / weight.shape[1].max(1)).max(1);
        Ok(Self {
            weight: Arc::new(weight),
            bias: bias.map(|b| Param::from_tensor(b).set_require_grad(false)),
            chunk_rows,
        })
    }

    /// Quantizes a dense `[out, in]` weight while loading (one tensor at a time).
    pub fn quantize_from(
        weight: WeightSlice<'_>,
        shape: [usize; 2],
        bias: Option<Tensor<B, 1>>,
        cfg: Nf4Config,
    ) -> anyhow::Result<Self> {
        Self::new(quantize(weight, &shape, cfg)?, bias)
    }

    /// Sets how many output rows are dequantized at once (memory vs. number of matmuls).
    pub fn with_chunk_rows(mut self, rows: usize) -> Self {
        self.chunk_rows = rows.max(1);
        self
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.shape[1]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.shape[0]
    }

    /// Rows `[r0, r1)` of the weight dequantized to an f32 tensor `[r1 - r0, in]` on `device`.
    /// This is the only place packed codes become compute values: replace it with a device
    /// kernel (or fuse it into the GEMM) for CUDA.
    pub fn dequantize_rows(&self, r0: usize, r1: usize, device: &B::Device) -> Tensor<B, 2> {
        let inp = self.in_features();
        let mut buf = vec![0.0f32; (r1 - r0) * inp];
        self.weight.dequantize_range_into(r0 * inp, &mut buf);
        Tensor::from_data(TensorData::new(buf, [r1 - r0, inp]), device)
    }

    /// The whole weight as a dense f32 tensor (merging adapters, tests).
    pub fn dequantize(&self, device: &B::Device) -> Tensor<B, 2> {
        self.dequantize_rows(0, self.out_features(), device)
    }

    /// Applies the layer to the last dimension of `x` (any rank ≥ 1).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let inner = dims[D - 1];
        assert_eq!(inner, self.in_features(), "Nf4Linear input width");
        let rows: usize = dims[..D - 1].iter().product();
        let x2 = x.reshape([rows, inner]);
        let y = self.forward_2d(x2);
        let mut out = dims;
        out[D - 1] = self.out_features();
        y.reshape(out)
    }

    /// `x [rows, in] -> [rows, out]`.
    pub fn forward_2d(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let device = x.device();
        let out_f = self.out_features();
        let mut parts = Vec::with_capacity(out_f.div_ceil(self.chunk_rows));
        let mut r0 = 0;
        while r0 < out_f {
            let r1 = (r0 + self.chunk_rows).min(out_f);
            let w = self.dequantize_rows(r0, r1, &device);
            parts.push(x.clone().matmul(w.transpose()));
            r0 = r1;
        }
        let y = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(parts, 1)
        };
        match &self.bias {
            Some(b) => y + b.val().unsqueeze_dim::<2>(0),
            None => y,
        }
    }
}

#[cfg(test)]
mod tests;

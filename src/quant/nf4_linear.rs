//! A frozen NF4 linear layer for burn: `y = x · dequant(W)ᵀ + b`.
//!
//! The packed weight lives in host memory as an [`Nf4Tensor`] behind an `Arc`, in a field the
//! module system skips (`#[module(skip)]`): it is not a `Param`, so burn's autodiff never tracks it,
//! optimizers never see it (no gradient, no optimizer state) and records do not copy it. The bias,
//! if any, is a `Param` marked `require_grad = false`.
//!
//! Forward dequantizes the weight to f32 in chunks of output rows (bounding the transient memory
//! to `chunk_rows × in` floats) and multiplies each chunk, then concatenates the outputs. The
//! single place that turns packed codes into a compute tensor is [`Nf4Linear::dequantize_rows`].
//! On the CPU backend it dequantizes on the host (one pass over the codes). On any other backend
//! (CUDA) the packed codes, the per-block scales and the 16-value code table are uploaded once
//! per layer and device ([`Nf4Linear::dequantize_rows_on_device`]), and every forward expands
//! them there with tensor ops: half a byte per weight crosses the bus once, instead of four
//! bytes per weight at every forward. Under autodiff the product has its own backward
//! ([`super::nf4_grad`]), which re-dequantizes the weight for the input gradient, as
//! bitsandbytes' `MatMul4Bit` does: burn's matmul would keep every dequantized chunk alive until
//! backward (the right operand of a product whose left operand needs a gradient), the whole
//! model in f32.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::{DType, Element, ElementConversion};

use super::nf4::{NF4_CODE, Nf4Config, Nf4Tensor, WeightSlice, quantize};

/// The packed weight as it lives on one compute device.
#[derive(Clone)]
struct DeviceNf4<B: Backend> {
    /// The packed codes, one u8 per pair of values (first value in the high nibble).
    packed: Tensor<B, 1, Int>,
    /// The f32 scale of every block (double quantization already undone on the host).
    absmax: Tensor<B, 1>,
    /// `NF4_CODE`, the 16 values a code stands for.
    code: Tensor<B, 1>,
}

/// Device copies of one layer's packed weight, one per (backend type, device), shared by the
/// clones of the layer (the learner's autodiff model and the sampler's inference model).
#[derive(Clone, Default)]
pub struct DeviceCache(Arc<Mutex<HashMap<CacheKey, Box<dyn Any + Send + Sync>>>>);

/// A backend type and one of its devices.
type CacheKey = (TypeId, String);

impl std::fmt::Debug for DeviceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceCache")
    }
}

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
    /// The packed weight uploaded to non-CPU devices, made on first use.
    #[module(skip)]
    pub device_cache: DeviceCache,
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
            device_cache: DeviceCache::default(),
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
    /// This is the only place packed codes become compute values: on the CPU backend a host
    /// pass, elsewhere [`Self::dequantize_rows_on_device`] (a fused 4-bit GEMM kernel would
    /// replace both).
    pub fn dequantize_rows(&self, r0: usize, r1: usize, device: &B::Device) -> Tensor<B, 2> {
        if !B::name(device).to_lowercase().contains("flex") {
            return self.dequantize_rows_on_device(r0, r1, device);
        }
        let inp = self.in_features();
        let mut buf = vec![0.0f32; (r1 - r0) * inp];
        self.weight.dequantize_range_into(r0 * inp, &mut buf);
        Tensor::from_data(TensorData::new(buf, [r1 - r0, inp]), device)
    }

    /// [`Self::dequantize_rows`] computed on `device` from the uploaded codes: the same f32
    /// products as the host (`NF4_CODE[code] * absmax[block]`), so the same values.
    pub fn dequantize_rows_on_device(
        &self,
        r0: usize,
        r1: usize,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let d = self.on_device(device);
        let inp = self.in_features();
        let (start, end) = (r0 * inp, r1 * inp);
        let (b0, b1) = (start / 2, end.div_ceil(2));
        let int_dtype: DType = <B::IntElem as Element>::dtype();
        let bytes = d.packed.slice(b0..b1).cast(int_dtype);
        let hi = bytes.clone().bitwise_right_shift_scalar(4.elem());
        let lo = bytes.bitwise_and_scalar(15.elem());
        let nibbles = Tensor::stack::<2>(vec![hi, lo], 1).reshape([2 * (b1 - b0)]);
        let first = start - 2 * b0;
        let codes = nibbles.slice(first..first + (end - start));
        let blocks = Tensor::<B, 1, Int>::arange(start as i64..end as i64, device)
            .div_scalar(self.weight.blocksize as i64);
        let values = d.code.select(0, codes) * d.absmax.select(0, blocks);
        values.reshape([r1 - r0, inp])
    }

    /// This layer's packed weight on `device`, uploaded on first use.
    fn on_device(&self, device: &B::Device) -> DeviceNf4<B> {
        let key = (TypeId::of::<B>(), format!("{device:?}"));
        let mut cache = self
            .device_cache
            .0
            .lock()
            .expect("NF4 device cache poisoned");
        if let Some(d) = cache
            .get(&key)
            .and_then(|d| d.downcast_ref::<DeviceNf4<B>>())
        {
            return d.clone();
        }
        let w = &self.weight;
        let packed = Tensor::<B, 1, Int>::from_data(
            TensorData::new(w.packed.clone(), [w.packed.len()]),
            (device, DType::U8),
        );
        let scales: Vec<f32> = (0..w.absmax.len()).map(|b| w.absmax.get(b)).collect();
        let n = scales.len();
        let d = DeviceNf4 {
            packed,
            absmax: Tensor::from_data(TensorData::new(scales, [n]), device),
            code: Tensor::from_data(TensorData::new(NF4_CODE.to_vec(), [16]), device),
        };
        cache.insert(key, Box::new(d.clone()));
        d
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

    /// `x [rows, in] -> [rows, out]`. Under autodiff the product is
    /// [`super::nf4_grad`]'s op, whose backward re-dequantizes the weight instead of keeping it.
    pub fn forward_2d(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y =
            super::nf4_grad::try_autodiff(self, &x).unwrap_or_else(|| self.matmul_dequantized(x));
        match &self.bias {
            Some(b) => y + b.val().unsqueeze_dim::<2>(0),
            None => y,
        }
    }

    /// `x · Wᵀ` (no bias), dequantizing `chunk_rows` output rows of `W` at a time: each chunk
    /// lives only for its product.
    pub fn matmul_dequantized(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
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
        if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(parts, 1)
        }
    }

    /// `dy · W` for `dy [rows, out]`: the input gradient of `x · Wᵀ`, dequantizing
    /// `chunk_rows` rows of `W` at a time and summing the chunks' products.
    pub fn input_grad(&self, dy: Tensor<B, 2>) -> Tensor<B, 2> {
        let device = dy.device();
        let out_f = self.out_features();
        let mut dx: Option<Tensor<B, 2>> = None;
        let mut r0 = 0;
        while r0 < out_f {
            let r1 = (r0 + self.chunk_rows).min(out_f);
            let w = self.dequantize_rows(r0, r1, &device);
            let part = dy.clone().narrow(1, r0, r1 - r0).matmul(w);
            dx = Some(match dx {
                None => part,
                Some(acc) => acc + part,
            });
            r0 = r1;
        }
        dx.expect("a weight has at least one row")
    }

    /// The same packed weight (shared, not copied) as a layer of backend `B2`, without bias:
    /// the inner backend's view that the autodiff op computes with.
    pub fn share<B2: Backend>(&self) -> Nf4Linear<B2> {
        Nf4Linear {
            weight: self.weight.clone(),
            bias: None,
            chunk_rows: self.chunk_rows,
            device_cache: self.device_cache.clone(),
        }
    }
}

#[cfg(test)]
mod tests;

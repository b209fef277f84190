//! Nf4Linear: forward equals the dense product with the bitsandbytes-dequantized weight, for any
//! chunking; the packed weight is invisible to autodiff and optimizers.

use super::*;
use crate::quant::testutil::Fixture;
use burn::backend::{Autodiff, Flex};
use burn::module::ModuleVisitor;

type B = Flex;
type AB = Autodiff<Flex>;

fn data(v: Vec<f32>, shape: [usize; 2]) -> TensorData {
    TensorData::new(v, shape)
}

#[test]
fn forward_equals_dense_product_with_bnb_dequantized_weight() {
    let f = Fixture::open("nf4/nf4_ref.safetensors");
    let w = f.f32("dq.weight");
    let dev = Default::default();
    let bias: Vec<f32> = (0..150).map(|i| i as f32 * 0.01).collect();
    let layer = Nf4Linear::<B>::quantize_from(
        WeightSlice::F32(&w),
        [150, 131],
        Some(Tensor::from_data(
            TensorData::new(bias.clone(), [150]),
            &dev,
        )),
        Nf4Config {
            blocksize: 64,
            double_quant: true,
        },
    )
    .unwrap();
    let x: Vec<f32> = (0..3 * 131)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let xt = Tensor::<B, 2>::from_data(data(x.clone(), [3, 131]), &dev);
    let wd = Tensor::<B, 2>::from_data(data(f.f32("dq.dequant"), [150, 131]), &dev);
    let b = Tensor::<B, 1>::from_data(TensorData::new(bias, [150]), &dev);
    let want = xt.clone().matmul(wd.transpose()) + b.unsqueeze_dim::<2>(0);
    for chunk in [1, 7, 64, 150, 1000] {
        let got = layer.clone().with_chunk_rows(chunk).forward(xt.clone());
        got.into_data().assert_approx_eq::<f32>(
            &want.clone().into_data(),
            burn::tensor::Tolerance::absolute(1e-5),
        );
    }
    // rank-3 input
    let x3 = xt.reshape([1, 3, 131]);
    assert_eq!(layer.forward(x3).dims(), [1, 3, 150]);
}

struct Trainable(usize, usize);
impl<Bk: Backend> ModuleVisitor<Bk> for Trainable {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Bk, D>>) {
        if p.is_require_grad() {
            self.0 += p.shape().num_elements();
        } else {
            self.1 += p.shape().num_elements();
        }
    }
}

#[test]
fn base_is_frozen_and_gradients_reach_the_input() {
    let dev = Default::default();
    let w: Vec<f32> = (0..8 * 64)
        .map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0)
        .collect();
    let layer = Nf4Linear::<AB>::quantize_from(
        WeightSlice::F32(&w),
        [8, 64],
        Some(Tensor::zeros([8], &dev)),
        Nf4Config::default(),
    )
    .unwrap();
    let mut v = Trainable(0, 0);
    layer.visit(&mut v);
    assert_eq!((v.0, v.1), (0, 8), "only the frozen bias is a parameter");
    let x = Tensor::<AB, 2>::ones([2, 64], &dev).require_grad();
    let y = layer.forward(x.clone());
    let grads = y.sum().backward();
    let gx = x.grad(&grads).expect("input gradient");
    // d(sum(x Wᵀ))/dx = column sums of W (dequantized).
    let wd = layer
        .dequantize(&dev)
        .inner()
        .sum_dim(0)
        .reshape([1, 64])
        .repeat_dim(0, 2);
    gx.into_data()
        .assert_approx_eq::<f32>(&wd.into_data(), burn::tensor::Tolerance::absolute(1e-5));
    let b = layer.bias.as_ref().unwrap();
    assert!(b.grad(&grads).is_none(), "frozen bias has no gradient");
}

/// The device-side expansion (what CUDA runs: uploaded u8 codes, scales and code table expanded
/// with tensor ops) gives bitsandbytes' dequantized values exactly, plain and double-quantized,
/// for row ranges that start on odd values and cut blocks (131 and 37 wide, blocks of 64), on the
/// plain and the autodiff backend, with the upload reused across calls.
#[test]
fn device_dequantization_equals_bitsandbytes() {
    let f = Fixture::open("nf4/nf4_ref.safetensors");
    for (name, shape, double_quant) in [("dq", [150, 131], true), ("small", [13, 37], false)] {
        let w = f.f32(&format!("{name}.weight"));
        let want = f.f32(&format!("{name}.dequant"));
        let cfg = Nf4Config {
            blocksize: 64,
            double_quant,
        };
        let layer = Nf4Linear::<B>::quantize_from(WeightSlice::F32(&w), shape, None, cfg).unwrap();
        let ad = Nf4Linear::<AB>::quantize_from(WeightSlice::F32(&w), shape, None, cfg).unwrap();
        let cols = shape[1];
        for (r0, r1) in [(0, shape[0]), (1, 2), (3, 8), (shape[0] - 1, shape[0])] {
            let expect = &want[r0 * cols..r1 * cols];
            for _ in 0..2 {
                let got: Vec<f32> = layer
                    .dequantize_rows_on_device(r0, r1, &Default::default())
                    .into_data()
                    .to_vec()
                    .unwrap();
                assert_eq!(got, expect, "{name} rows {r0}..{r1}");
            }
            let got: Vec<f32> = ad
                .dequantize_rows_on_device(r0, r1, &Default::default())
                .into_data()
                .to_vec()
                .unwrap();
            assert_eq!(got, expect, "{name} rows {r0}..{r1} (autodiff)");
        }
    }
}

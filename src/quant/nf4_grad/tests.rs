//! The NF4 op's backward against burn's own matmul on the dequantized weight: same output and
//! same input gradient (within the rounding of a chunked sum), for chunkings that cut the output
//! rows unevenly, through a deeper graph (the gradient that arrives is not all ones), and with
//! the input untracked (no graph at all).

use super::*;
use crate::quant::nf4::{Nf4Config, WeightSlice};
use burn::backend::Flex;
use burn::tensor::Tolerance;

type AB = Autodiff<Flex>;

fn weight(out: usize, inp: usize) -> Vec<f32> {
    (0..out * inp)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 60.0)
        .collect()
}

fn layer(out: usize, inp: usize, chunk_rows: usize) -> Nf4Linear<AB> {
    let cfg = Nf4Config {
        blocksize: 64,
        double_quant: true,
    };
    Nf4Linear::<AB>::quantize_from(WeightSlice::F32(&weight(out, inp)), [out, inp], None, cfg)
        .unwrap()
        .with_chunk_rows(chunk_rows)
}

#[test]
fn input_gradient_equals_the_dense_product_for_any_chunking() {
    let dev = Default::default();
    let (out, inp, rows) = (70, 45, 5);
    let x0: Vec<f32> = (0..rows * inp)
        .map(|i| ((i * 13 % 31) as f32 - 15.0) / 15.0)
        .collect();
    for chunk in [1, 9, 64, 70, 1000] {
        let l = layer(out, inp, chunk);
        assert!(try_autodiff(&l, &Tensor::zeros([1, inp], &dev)).is_some());
        let w = l.dequantize(&dev).inner();
        let x = Tensor::<AB, 2>::from_data(TensorData::new(x0.clone(), [rows, inp]), &dev)
            .require_grad();
        // A loss that is not linear in y, so dY is not constant.
        let y = l.forward(x.clone());
        let grads = y.clone().powf_scalar(2.0).sum().backward();
        let gx = x.grad(&grads).unwrap();

        let xd = Tensor::<AB, 2>::from_data(TensorData::new(x0.clone(), [rows, inp]), &dev)
            .require_grad();
        let yd = xd
            .clone()
            .matmul(Tensor::<AB, 2>::from_inner(w).transpose());
        let gd = xd
            .grad(&yd.clone().powf_scalar(2.0).sum().backward())
            .unwrap();
        y.into_data()
            .assert_approx_eq::<f32>(&yd.into_data(), Tolerance::absolute(1e-5));
        gx.into_data()
            .assert_approx_eq::<f32>(&gd.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
    }
}

#[test]
fn an_untracked_input_gives_the_plain_product() {
    let dev = Default::default();
    let l = layer(12, 64, 5);
    let x = Tensor::<AB, 2>::ones([3, 64], &dev);
    let want = x
        .clone()
        .inner()
        .matmul(l.dequantize(&dev).inner().transpose());
    l.forward(x)
        .inner()
        .into_data()
        .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
}

#[test]
fn other_backends_are_not_taken() {
    let dev = Default::default();
    let cfg = Nf4Config::default();
    let plain =
        Nf4Linear::<Flex>::quantize_from(WeightSlice::F32(&weight(4, 64)), [4, 64], None, cfg)
            .unwrap();
    assert!(try_autodiff(&plain, &Tensor::zeros([1, 64], &dev)).is_none());
}

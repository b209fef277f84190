//! `medgrpo bench nf4`: NF4 vs dense f32 linear layers on the CPU backend at MedGemma's shapes —
//! forward, and forward + backward through a LoRA adapter (what the learner runs) — plus the
//! dequantization throughput. Prints figures; nothing is asserted.

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;

use super::median_secs;
use crate::model::lora_linear::{
    DenseLinear, LinearBase, LoraAdapter, LoraLinear, LoraMode, LoraSettings,
};
use crate::quant::nf4::{Nf4Config, WeightSlice, quantize};
use crate::quant::nf4_linear::Nf4Linear;

type B = Flex;
type AB = Autodiff<Flex>;

/// Tokens per forward (rows of `x`).
const TOKENS: usize = 128;
/// LoRA rank used for the backward runs.
const RANK: usize = 16;

fn weight(out: usize, inp: usize) -> Vec<f32> {
    // Deterministic, roughly Gaussian-looking values (sum of two hashes).
    (0..out * inp)
        .map(|i| {
            let a =
                ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32;
            let b =
                ((i as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F) >> 40) as f32 / (1u64 << 24) as f32;
            (a + b - 1.0) * 0.04
        })
        .collect()
}

fn adapter<Bk: Backend>(inp: usize, out: usize, dev: &Bk::Device) -> LoraAdapter<Bk> {
    let s = LoraSettings {
        r: RANK,
        alpha: 32.0,
        dropout: 0.0,
        use_rslora: false,
    };
    let mut a = LoraAdapter::init(inp, out, &s, 1, 2, dev);
    // Non-zero B so the backward is the real one.
    a.lora_b = burn::module::Param::from_tensor(Tensor::ones([out, RANK], dev).mul_scalar(0.01));
    a
}

/// Runs the benchmark and prints a table.
pub fn run() -> anyhow::Result<()> {
    let build = if cfg!(debug_assertions) {
        "dev (debug assertions on)"
    } else {
        "release"
    };
    println!(
        "NF4 linear benchmark, burn flex CPU backend, {build} build, {TOKENS} tokens, LoRA r={RANK}"
    );
    let row = |cells: [&str; 9]| {
        println!(
            "{:<14} {:>10} {:>10} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8]
        )
    };
    row([
        "shape",
        "dense MB",
        "nf4 MB",
        "dense fwd",
        "nf4 fwd",
        "dense+LoRA",
        "nf4+LoRA",
        "deq GB/s",
        "deq Gv/s",
    ]);
    row([
        "(in->out)",
        "f32",
        "dq",
        "tok/s",
        "tok/s",
        "fwd+bwd t/s",
        "fwd+bwd t/s",
        "out f32",
        "values",
    ]);
    for (inp, out) in [(2560usize, 2048usize), (2560, 10240), (10240, 2560)] {
        measure(inp, out)?;
    }
    println!(
        "memory: weights only (NF4 = packed codes + double-quantized absmax); NF4 forward \
         dequantizes chunks of <= 4 Mi values (16 MiB f32) at a time; under autodiff the \
         dequantized chunks stay alive until backward"
    );
    Ok(())
}

/// Measures and prints one row: an `[out, in]` layer, dense and NF4 (double-quantized).
fn measure(inp: usize, out: usize) -> anyhow::Result<()> {
    let dev = Default::default();
    let w = weight(out, inp);
    let cfg = Nf4Config {
        blocksize: 64,
        double_quant: true,
    };
    let q = quantize(WeightSlice::F32(&w), &[out, inp], cfg)?;
    let nf4_mb = q.bytes() as f64 / 1e6;
    let dense_mb = (4 * w.len()) as f64 / 1e6;

    // Dequantization throughput (host, single thread).
    let mut buf = vec![0.0f32; w.len()];
    let deq = median_secs(5, || q.dequantize_range_into(0, &mut buf));
    let deq_gbs = (4 * w.len()) as f64 / deq / 1e9;
    let deq_gvs = w.len() as f64 / deq / 1e9;

    let x: Vec<f32> = (0..TOKENS * inp)
        .map(|i| ((i % 97) as f32 - 48.0) / 48.0)
        .collect();

    // Forward only (inference backend).
    let wt = Tensor::<B, 2>::from_data(TensorData::new(w.clone(), [out, inp]), &dev);
    let dense = DenseLinear::new(wt, None);
    let nf4 = Nf4Linear::<B>::new(q.clone(), None)?;
    let xt = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [TOKENS, inp]), &dev);
    let t_dense = median_secs(5, || {
        let _ = dense.forward_2d(xt.clone()).into_data();
    });
    let t_nf4 = median_secs(5, || {
        let _ = nf4.forward_2d(xt.clone()).into_data();
    });

    // Forward + backward through LoRA (autodiff backend), loss = sum(y).
    let wa = Tensor::<AB, 2>::from_data(TensorData::new(w.clone(), [out, inp]), &dev);
    let dense_l = LoraLinear {
        base: LinearBase::Dense(DenseLinear::new(wa, None)),
        lora: Some(adapter::<AB>(inp, out, &dev)),
    };
    let nf4_l = LoraLinear {
        base: LinearBase::Nf4(Nf4Linear::<AB>::new(q, None)?),
        lora: Some(adapter::<AB>(inp, out, &dev)),
    };
    // The input requires a gradient, as inside the model (dX = dY · W runs through the base).
    let xa = Tensor::<AB, 2>::from_data(TensorData::new(x, [TOKENS, inp]), &dev).require_grad();
    let step = |l: &LoraLinear<AB>| {
        let y = l.forward_mode(xa.clone(), LoraMode::Train { seed: 0 });
        let g = y.sum().backward();
        let a = l.lora.as_ref().expect("adapter");
        let _ = a.lora_a.grad(&g).expect("grad").into_data();
    };
    let t_dense_bw = median_secs(3, || step(&dense_l));
    let t_nf4_bw = median_secs(3, || step(&nf4_l));
    let tps = |t: f64| TOKENS as f64 / t;
    println!(
        "{:<14} {:>10.1} {:>10.1} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>9.2} {:>9.2}",
        format!("{inp}->{out}"),
        dense_mb,
        nf4_mb,
        tps(t_dense),
        tps(t_nf4),
        tps(t_dense_bw),
        tps(t_nf4_bw),
        deq_gbs,
        deq_gvs
    );
    Ok(())
}

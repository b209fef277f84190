//! AdamW + global clipping + schedule against `torch.optim.AdamW(fused=True)`,
//! `clip_grad_norm_` and transformers' `get_scheduler`, stepped in the HF `Trainer` order
//! (fixtures from `scripts/trl_loss_fixtures.py`).

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;
use serde_json::Value;

use super::*;
use crate::config::SchedulerType;
use crate::grpo::lr_schedule::lr_at;

type B = Flex;

fn fixture() -> (Value, Vec<u8>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loss");
    let json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("optim.json")).unwrap()).unwrap();
    (json, std::fs::read(dir.join("optim.safetensors")).unwrap())
}

fn load(st: &SafeTensors, name: &str) -> Tensor<B, 1> {
    let v = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let data: Vec<f32> = v
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), &Default::default())
}

fn vec(t: Tensor<B, 1>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

fn config(run: &Value) -> TrainingConfig {
    TrainingConfig {
        learning_rate: run["lr"].as_f64().unwrap(),
        weight_decay: run["weight_decay"].as_f64().unwrap(),
        adam_epsilon: run["eps"].as_f64().unwrap(),
        adam_beta1: run["betas"][0].as_f64().unwrap(),
        adam_beta2: run["betas"][1].as_f64().unwrap(),
        max_grad_norm: run["max_grad_norm"].as_f64().unwrap(),
        warmup_steps: run["warmup_steps"].as_u64().unwrap() as usize,
        lr_scheduler_type: match run["scheduler"].as_str().unwrap() {
            "linear" => SchedulerType::Linear,
            "cosine" => SchedulerType::Cosine,
            "constant" => SchedulerType::Constant,
            s => panic!("{s}"),
        },
        ..Default::default()
    }
}

/// One HF `Trainer` optimizer step over all parameters; returns the pre-clip norm.
fn trainer_step(
    opt: &mut AdamW<B>,
    params: &mut [Tensor<B, 1>],
    grads: &[Tensor<B, 1>],
    lr: f64,
    max_norm: f64,
) -> f64 {
    let norm = global_norm(grads.iter().map(squared_norm).collect());
    let coef = clip_coefficient(norm, max_norm).unwrap();
    for (j, (p, g)) in params.iter_mut().zip(grads).enumerate() {
        *p = opt
            .step(&format!("p{j}"), p.clone(), g.clone().mul_scalar(coef), lr)
            .unwrap();
    }
    norm
}

#[test]
fn adamw_clip_and_schedule_match_torch() {
    let (json, bytes) = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for (name, run) in json["runs"].as_object().unwrap() {
        let cfg = config(run);
        let total = run["total_steps"].as_u64().unwrap() as usize;
        let np = run["num_params"].as_u64().unwrap() as usize;
        let mut opt = AdamW::<B>::new(&cfg);
        let mut params: Vec<_> = (0..np)
            .map(|j| load(&st, &format!("{name}.init.param{j}")))
            .collect();
        for s in 0..run["steps"].as_u64().unwrap() as usize {
            let grads: Vec<_> = (0..np)
                .map(|j| load(&st, &format!("{name}.step{s}.grad{j}")))
                .collect();
            let lr = lr_at(s, total, &cfg);
            let want_lr = run["lr_used"][s].as_f64().unwrap();
            assert!(
                (lr - want_lr).abs() <= 1e-12 * want_lr.max(1e-12),
                "{name} step {s}: lr {lr} vs {want_lr}"
            );
            let before: Vec<Vec<f32>> = params.iter().map(|p| vec(p.clone())).collect();
            let norm = trainer_step(&mut opt, &mut params, &grads, lr, cfg.max_grad_norm);
            let want_norm = run["grad_norm"][s].as_f64().unwrap();
            assert!(
                (norm - want_norm).abs() <= 1e-5 * want_norm,
                "{name} step {s}: norm {norm} vs {want_norm}"
            );
            for j in 0..np {
                let got = vec(params[j].clone());
                let want = vec(load(&st, &format!("{name}.step{s}.param{j}")));
                // the update itself (param change) within 1e-4 relative to the largest change,
                // and the parameters within 1e-6
                let dw: Vec<f64> = want
                    .iter()
                    .zip(&before[j])
                    .map(|(w, b)| (*w - *b) as f64)
                    .collect();
                let scale = dw.iter().fold(0f64, |m, x| m.max(x.abs()));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let d = (*g as f64 - *w as f64).abs();
                    assert!(
                        d <= 1e-4 * scale + 1e-6 * (*w as f64).abs().max(1e-3),
                        "{name} step {s} param {j}[{i}]: {g} vs torch {w} (update scale {scale})"
                    );
                }
            }
        }
        for (j, s) in (0..np).map(|j| (j, opt.state()[&format!("p{j}")].clone())) {
            // burn forms 1 - b2 in f32 (1 - 0.999f32 = 0.00099998713), torch in f64 (0.001): burn's
            // second moment carries that constant factor, which its bias correction
            // (1 - b2^t, also in f32) cancels in the update (checked above). Undo it to compare.
            let b2 = cfg.adam_beta2;
            let v_factor = (1.0 - b2) / (1.0 - b2 as f32 as f64);
            for (what, got, factor) in [
                ("exp_avg", s.exp_avg, 1.0),
                ("exp_avg_sq", s.exp_avg_sq, v_factor),
            ] {
                let want = vec(load(&st, &format!("{name}.final.{what}{j}")));
                let got = vec(got);
                let scale = want.iter().fold(0f64, |m, x| m.max(x.abs() as f64));
                for (g, w) in got.iter().zip(&want) {
                    let g = *g as f64 * factor;
                    assert!(
                        (g - *w as f64).abs() <= 2e-6 * scale,
                        "{name} {what}{j}: {g} vs torch {w}"
                    );
                }
            }
        }
    }
}

/// Saving the state after 2 steps and continuing in a fresh optimizer gives bit-identical
/// parameters to an uninterrupted run.
#[test]
fn state_round_trip_resumes_exactly() {
    let (json, bytes) = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let run = &json["runs"]["a"];
    let cfg = config(run);
    let grads = |s: usize| -> Vec<Tensor<B, 1>> {
        (0..3)
            .map(|j| load(&st, &format!("a.step{s}.grad{j}")))
            .collect()
    };
    let init: Vec<_> = (0..3)
        .map(|j| load(&st, &format!("a.init.param{j}")))
        .collect();

    let mut straight = init.clone();
    let mut opt = AdamW::<B>::new(&cfg);
    for s in 0..4 {
        trainer_step(&mut opt, &mut straight, &grads(s), lr_at(s, 8, &cfg), 1.0);
    }

    let mut resumed = init;
    let mut first = AdamW::<B>::new(&cfg);
    for s in 0..2 {
        trainer_step(&mut first, &mut resumed, &grads(s), lr_at(s, 8, &cfg), 1.0);
    }
    let saved: Vec<(String, usize, Vec<f32>, Vec<f32>)> = first
        .state()
        .into_iter()
        .map(|(k, s)| (k, s.step, vec(s.exp_avg), vec(s.exp_avg_sq)))
        .collect();
    let mut second = AdamW::<B>::new(&cfg);
    for (k, step, m, v) in saved {
        let t = |x: Vec<f32>| {
            let n = x.len();
            Tensor::<B, 1>::from_data(TensorData::new(x, [n]), &Default::default())
        };
        second
            .set_state(
                &k,
                ParamState {
                    step,
                    exp_avg: t(m),
                    exp_avg_sq: t(v),
                },
            )
            .unwrap();
    }
    for s in 2..4 {
        trainer_step(&mut second, &mut resumed, &grads(s), lr_at(s, 8, &cfg), 1.0);
    }
    for (a, b) in straight.into_iter().zip(resumed) {
        assert_eq!(vec(a), vec(b));
    }
}

#[test]
fn clip_coefficient_rules() {
    assert_eq!(clip_coefficient(0.5, 1.0), Some(1.0));
    assert_eq!(clip_coefficient(4.0, 1.0), Some(1.0 / (4.0 + 1e-6)));
    assert_eq!(clip_coefficient(f64::NAN, 1.0), None);
    assert_eq!(clip_coefficient(f64::INFINITY, 1.0), None);
    assert_eq!(clip_coefficient(7.0, 0.0), Some(1.0));
}

#[test]
fn mismatched_state_is_an_error() {
    let mut opt = AdamW::<B>::new(&TrainingConfig::default());
    let dev = Default::default();
    opt.step(
        "w",
        Tensor::<B, 2>::zeros([2, 2], &dev),
        Tensor::ones([2, 2], &dev),
        1e-3,
    )
    .unwrap();
    let err = opt
        .step(
            "w",
            Tensor::<B, 2>::zeros([3, 2], &dev),
            Tensor::ones([3, 2], &dev),
            1e-3,
        )
        .unwrap_err();
    assert!(err.to_string().contains("optimizer state of w"), "{err}");
}

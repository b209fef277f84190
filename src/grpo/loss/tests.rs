//! Checks against TRL 1.16's own `_compute_loss` (fixtures from `scripts/trl_loss_fixtures.py`):
//! per-token log-probs and entropies, the step loss, per-micro-batch losses and metrics, and the
//! gradient of the step loss w.r.t. the logits, for every loss type, on- and off-policy (clipping
//! active), beta = 0 and > 0 with and without bias-corrected KL, token and sequence level.
//! Tolerance: 1e-5 relative (losses near 0: of 0.01; gradients: of the largest gradient entry).

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Int, Tensor, TensorData};
use safetensors::SafeTensors;
use serde_json::Value;

use super::*;
use crate::config::{ImportanceSamplingLevel, LossType, TrainingConfig};

type B = Autodiff<Flex>;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loss")
}

struct Case {
    json: Value,
    bytes: Vec<u8>,
}

impl Case {
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
    fn has(&self, name: &str) -> bool {
        self.st().names().contains(&name)
    }
    fn f32s(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = self.st();
        let v = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.dtype(), safetensors::Dtype::F32, "{name}");
        let data = v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (data, v.shape().to_vec())
    }
    fn tensor<const D: usize>(&self, name: &str) -> Tensor<B, D> {
        let (data, shape) = self.f32s(name);
        Tensor::from_data(TensorData::new(data, shape), &Default::default())
    }
    fn ids(&self, name: &str) -> Tensor<B, 2, Int> {
        let st = self.st();
        let v = st.tensor(name).unwrap();
        assert_eq!(v.dtype(), safetensors::Dtype::I64);
        let data: Vec<i32> = v
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as i32)
            .collect();
        Tensor::from_data(
            TensorData::new(data, v.shape().to_vec()),
            &Default::default(),
        )
    }
    fn f(&self, key: &str) -> f64 {
        self.json[key].as_f64().unwrap()
    }
    fn u(&self, key: &str) -> usize {
        self.json[key].as_u64().unwrap() as usize
    }
    fn name(&self) -> &str {
        self.json["name"].as_str().unwrap()
    }

    fn config(&self) -> TrainingConfig {
        let j = &self.json;
        TrainingConfig {
            per_device_train_batch_size: self.u("per_device_train_batch_size"),
            gradient_accumulation_steps: self.u("gradient_accumulation_steps"),
            num_generations: self.u("num_generations"),
            max_completion_length: self.u("max_completion_length"),
            beta: self.f("beta"),
            epsilon: self.f("epsilon"),
            epsilon_high: j["epsilon_high"].as_f64(),
            loss_type: match j["loss_type"].as_str().unwrap() {
                "grpo" => LossType::Grpo,
                "bnpo" => LossType::Bnpo,
                "dr_grpo" => LossType::DrGrpo,
                "dapo" => LossType::Dapo,
                other => panic!("loss type {other}"),
            },
            importance_sampling_level: match j["importance_sampling_level"].as_str().unwrap() {
                "token" => ImportanceSamplingLevel::Token,
                _ => ImportanceSamplingLevel::Sequence,
            },
            use_bias_correction_kl: j["use_bias_correction_kl"].as_bool().unwrap(),
            temperature: self.f("temperature"),
            ..TrainingConfig::default()
        }
    }
}

fn cases() -> Vec<Case> {
    let dir = fixture_dir();
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap();
            let bytes = std::fs::read(dir.join(format!("{name}.safetensors"))).unwrap();
            Case {
                json: c.clone(),
                bytes,
            }
        })
        .collect()
}

fn to_vec<const D: usize, BB: burn::tensor::backend::Backend>(t: Tensor<BB, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// Relative to `max(|want|, 0.01)`: a micro-batch loss is a sum of positive and negative terms of
/// size ~0.1 and can cancel to ~1e-3, where f32 rounding of the terms (~1e-8) dominates.
fn assert_close(what: &str, got: f64, want: f64, rel: f64) {
    let tol = rel * want.abs().max(1e-2);
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, TRL {want} (tol {tol})"
    );
}

/// Elementwise, with tolerance `rel` times the largest reference magnitude.
fn assert_all_close(what: &str, got: &[f32], want: &[f32], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want
        .iter()
        .fold(0f64, |m, x| m.max(x.abs() as f64))
        .max(1e-6);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (*g as f64 - *w as f64).abs();
        assert!(
            d <= rel * scale,
            "{what}[{i}]: got {g}, TRL {w} (scale {scale})"
        );
    }
}

struct Prepared {
    logits: Tensor<B, 3>,
    ids: Tensor<B, 2, Int>,
    mask: Tensor<B, 2>,
    adv: Tensor<B, 1>,
    old: Option<Tensor<B, 2>>,
    refl: Option<Tensor<B, 2>>,
    tokens: Vec<usize>,
}

fn prepare(c: &Case) -> Prepared {
    let mask: Tensor<B, 2> = c.tensor("mask");
    let tokens = to_vec(mask.clone().sum_dim(1))
        .iter()
        .map(|x| *x as usize)
        .collect();
    Prepared {
        logits: c.tensor::<3>("logits").require_grad(),
        ids: c.ids("completion_ids"),
        mask,
        adv: c.tensor("advantages"),
        old: c.has("old_logps").then(|| c.tensor("old_logps")),
        refl: c.has("ref_logps").then(|| c.tensor("ref_logps")),
        tokens,
    }
}

/// Loss inputs for rows `a..b` of the step, from the shared logits leaf.
fn inputs(p: &Prepared, cfg: &TrainingConfig, a: usize, b: usize) -> LossInputs<B> {
    let [_, t, v] = p.logits.dims();
    let logits = p.logits.clone().slice([a..b, 0..t, 0..v]);
    let (logps, entropy) =
        token_logps_and_entropy(logits, p.ids.clone().slice([a..b, 0..t]), cfg.temperature);
    LossInputs {
        logps,
        old_logps: p.old.clone().map(|x| x.slice([a..b, 0..t])),
        ref_logps: p.refl.clone().map(|x| x.slice([a..b, 0..t])),
        entropy: Some(entropy),
        advantages: p.adv.clone().slice(a..b),
        mask: p.mask.clone().slice([a..b, 0..t]),
        rows: (a..b).collect(),
    }
}

#[test]
fn logps_and_entropy_match_trl() {
    for c in cases() {
        let cfg = c.config();
        let p = prepare(&c);
        let (lp, ent) = token_logps_and_entropy(p.logits.clone(), p.ids.clone(), cfg.temperature);
        // TRL's fused head returns 0 at padded positions
        assert_all_close(
            &format!("{} logps", c.name()),
            &to_vec(lp * p.mask.clone()),
            &c.f32s("trl_logps").0,
            1e-5,
        );
        assert_all_close(
            &format!("{} entropy", c.name()),
            &to_vec(ent * p.mask.clone()),
            &c.f32s("trl_entropy").0,
            1e-5,
        );
    }
}

#[test]
fn step_loss_and_logit_gradient_match_trl() {
    for c in cases() {
        let cfg = c.config();
        let p = prepare(&c);
        let n = c.u("n");
        let norm = Normalizer::for_step(&cfg, &p.tokens).unwrap();
        let (loss, m) = grpo_loss(inputs(&p, &cfg, 0, n), &cfg, &norm).unwrap();
        assert_close(
            &format!("{} step loss", c.name()),
            m.loss,
            c.f("step_loss"),
            1e-5,
        );
        let grads = loss.backward();
        let g = p.logits.grad(&grads).unwrap();
        assert_all_close(
            &format!("{} d loss / d logits", c.name()),
            &to_vec(g),
            &c.f32s("grad_logits").0,
            1e-5,
        );
    }
}

#[test]
fn micro_batch_losses_and_metrics_match_trl() {
    for c in cases() {
        let cfg = c.config();
        let p = prepare(&c);
        let b = cfg.per_device_train_batch_size;
        let norm = Normalizer::for_step(&cfg, &p.tokens).unwrap();
        let metrics = &c.json["metrics"];
        for (k, want) in c.json["micro_losses"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let (_, m) = grpo_loss(inputs(&p, &cfg, k * b, (k + 1) * b), &cfg, &norm).unwrap();
            let what = |s: &str| format!("{} micro-batch {k} {s}", c.name());
            assert_close(&what("loss"), m.loss, want.as_f64().unwrap(), 1e-5);
            let trl = |key: &str| metrics[key].as_array().map(|a| a[k].as_f64().unwrap());
            assert_eq!(
                m.kl_mean().is_some(),
                trl("kl").is_some(),
                "{}",
                what("kl presence")
            );
            if let (Some(got), Some(want)) = (m.kl_mean(), trl("kl")) {
                assert_close(&what("kl"), got, want, 1e-5);
            }
            assert_close(
                &what("entropy"),
                m.entropy_mean().unwrap(),
                trl("entropy").unwrap(),
                1e-5,
            );
            // clip ratios are counts over counts: exact up to float formatting
            assert_close(
                &what("clip low"),
                m.clip_low_mean(),
                trl("clip_ratio/low_mean").unwrap(),
                1e-6,
            );
            assert_close(
                &what("clip high"),
                m.clip_high_mean(),
                trl("clip_ratio/high_mean").unwrap(),
                1e-6,
            );
            assert_close(
                &what("clip region"),
                m.clip_region_mean(),
                trl("clip_ratio/region_mean").unwrap(),
                1e-6,
            );
        }
    }
}

/// The learner's way: one call per group, skipping the zero-advantage group (when beta == 0),
/// gives TRL's step loss and logit gradient; TRL's gradient on the skipped rows is exactly 0.
#[test]
fn group_wise_calls_skipping_zero_advantage_groups_give_the_step() {
    let mut checked = 0;
    for c in cases() {
        let cfg = c.config();
        if cfg.beta != 0.0 {
            continue; // the KL term gives zero-advantage rows a gradient: they cannot be skipped
        }
        let p = prepare(&c);
        let n = c.u("n");
        let g = cfg.num_generations;
        let norm = Normalizer::for_step(&cfg, &p.tokens).unwrap();
        let adv = to_vec(p.adv.clone());
        let mut total: Option<Tensor<B, 1>> = None;
        let mut metrics = LossMetrics::default();
        let mut skipped_rows = Vec::new();
        for grp in 0..n / g {
            let (a, b) = (grp * g, (grp + 1) * g);
            if adv[a..b].iter().all(|x| *x == 0.0) {
                skipped_rows.extend(a..b);
                let toks: usize = p.tokens[a..b].iter().sum();
                metrics.add_skipped(g, toks, cfg.importance_sampling_level);
                continue;
            }
            let (l, m) = grpo_loss(inputs(&p, &cfg, a, b), &cfg, &norm).unwrap();
            metrics.merge(&m);
            total = Some(match total {
                Some(t) => t + l,
                None => l,
            });
        }
        assert!(
            !skipped_rows.is_empty(),
            "fixture has a zero-advantage group"
        );
        assert_close(
            &format!("{} group-wise loss", c.name()),
            metrics.loss,
            c.f("step_loss"),
            1e-5,
        );
        let grads = total.unwrap().backward();
        let got = to_vec(p.logits.grad(&grads).unwrap());
        let want = c.f32s("grad_logits").0;
        let per_row = want.len() / n;
        for r in &skipped_rows {
            assert!(
                want[r * per_row..(r + 1) * per_row]
                    .iter()
                    .all(|x| *x == 0.0),
                "TRL grad on row {r}"
            );
        }
        assert_all_close(&format!("{} group-wise grad", c.name()), &got, &want, 1e-5);
        checked += 1;
    }
    assert!(checked >= 5);
}

#[test]
fn normalizer_coefficients_follow_trl_formulas() {
    let tokens = [3, 0, 5, 2, 4, 1];
    let mut cfg = TrainingConfig {
        per_device_train_batch_size: 4,
        max_completion_length: 8,
        ..Default::default()
    };
    // two micro-batches: rows 0..4 (10 tokens) and 4..6 (5 tokens), GA = 2
    cfg.loss_type = LossType::Dapo;
    let n = Normalizer::for_step(&cfg, &tokens).unwrap();
    assert!((0..6).all(|r| n.coefficient(r) == 1.0 / 15.0));
    cfg.loss_type = LossType::Bnpo;
    let n = Normalizer::for_step(&cfg, &tokens).unwrap();
    assert_eq!(n.coefficient(0), 1.0 / 20.0);
    assert_eq!(n.coefficient(5), 1.0 / 10.0);
    cfg.loss_type = LossType::Grpo;
    let n = Normalizer::for_step(&cfg, &tokens).unwrap();
    assert_eq!(n.coefficient(0), 1.0 / (3.0 * 4.0 * 2.0));
    assert_eq!(n.coefficient(1), 1.0 / (4.0 * 2.0)); // empty completion: max(1, 0)
    assert_eq!(n.coefficient(4), 1.0 / (4.0 * 2.0 * 2.0));
    cfg.loss_type = LossType::DrGrpo;
    let n = Normalizer::for_step(&cfg, &tokens).unwrap();
    assert_eq!(n.coefficient(0), 1.0 / (4.0 * 8.0 * 2.0));
    assert!(n.coefficients::<Flex>(&[6], &Default::default()).is_err());
}

#[test]
fn beta_without_reference_is_an_error() {
    let cfg = TrainingConfig {
        beta: 0.1,
        per_device_train_batch_size: 1,
        ..Default::default()
    };
    let dev = Default::default();
    let inp = LossInputs::<Flex> {
        logps: Tensor::zeros([1, 2], &dev),
        old_logps: None,
        ref_logps: None,
        entropy: None,
        advantages: Tensor::ones([1], &dev),
        mask: Tensor::ones([1, 2], &dev),
        rows: vec![0],
    };
    let norm = Normalizer::for_step(&cfg, &[2]).unwrap();
    let err = grpo_loss(inp, &cfg, &norm).unwrap_err().to_string();
    assert!(err.contains("reference log-probs"), "{err}");
}

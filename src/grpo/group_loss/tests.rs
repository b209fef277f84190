//! The group loss (`medgrpo loss`, = the learner's `loss_and_grads`) against TRL 1.16 `GRPOTrainer` on the tiny
//! Gemma 3 VLM with a PEFT adapter whose B is non-zero: fixtures from
//! `scripts/trl_vlm_fixtures.py` (`tests/fixtures/grpo-vlm/`), one group with an image, per loss
//! type, on-policy, with clipping active, and with beta > 0 (reference = adapters disabled,
//! computed here) with and without the bias-corrected KL. Loss within 1e-4 relative, LoRA
//! gradients (written with `--grads`'s writer and read back by PEFT key name) within 1e-4
//! relative or 1e-5 absolute, per-token log-probs / entropies / reference log-probs and metrics.

use std::path::{Path, PathBuf};

use super::*;
use crate::lora::extract::write_matrices;
use crate::lora::load::{Adapters, ModelLoad};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpo-vlm")
}

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gemma3")
}

fn close(what: &str, got: f64, want: f64, rel: f64, abs: f64) {
    assert!(
        (got - want).abs() <= abs.max(rel * want.abs()),
        "{what}: got {got}, TRL {want} (diff {:e})",
        (got - want).abs()
    );
}

fn close_rows(what: &str, got: &[Vec<f32>], want: &serde_json::Value, tol: f64) {
    let want: Vec<Vec<f64>> = serde_json::from_value(want.clone()).unwrap();
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}[{i}]: length");
        for (j, (a, b)) in g.iter().zip(w).enumerate() {
            close(&format!("{what}[{i}][{j}]"), *a as f64, *b, 0.0, tol);
        }
    }
}

fn check(case: &str) {
    let path = fixture_dir().join(format!("{case}.json"));
    let file = GroupFile::load(&path).unwrap();
    let exp = file.expected.clone().expect("fixture has expected values");
    let quant = &exp["quant"];
    let q = crate::config::QuantizationConfig {
        load_in_4bit: quant["nf4"].as_bool().unwrap(),
        bnb_4bit_use_double_quant: quant["double_quant"].as_bool().unwrap(),
        ..Default::default()
    };
    let model = ModelLoad::base(&q)
        .with_adapters(Adapters::Peft(fixture_dir().join("adapter")))
        .load::<burn::backend::Autodiff<burn::backend::Flex>>(&model_dir(), &Default::default())
        .unwrap();
    let report = compute(&model, &model_dir(), &file, &fixture_dir()).unwrap();

    // Loss (exactly 0 for on-policy grpo: advantages sum to 0, so an absolute floor).
    close(
        &format!("{case} loss"),
        report.loss,
        exp["loss"].as_f64().unwrap(),
        1e-4,
        1e-7,
    );
    let adv: Vec<f64> = serde_json::from_value(exp["advantages"].clone()).unwrap();
    for (i, (a, b)) in report.advantages.iter().zip(&adv).enumerate() {
        close(&format!("{case} advantage {i}"), *a, *b, 1e-6, 1e-6);
    }
    let g = &report.groups[0];
    close_rows(&format!("{case} logps"), &g.logps, &exp["logps"], 2e-5);
    close_rows(
        &format!("{case} entropy"),
        &g.entropy,
        &exp["entropy"],
        2e-5,
    );
    match (&g.ref_logps, exp["ref_logps"].is_null()) {
        (Some(r), false) => close_rows(&format!("{case} ref_logps"), r, &exp["ref_logps"], 2e-5),
        (None, true) => {}
        (r, _) => panic!(
            "{case}: reference log-probs {r:?} vs TRL {}",
            exp["ref_logps"]
        ),
    }
    let metrics = report.metric_map();
    for (name, want) in exp["metrics"].as_object().unwrap() {
        let got = metrics
            .get(name)
            .unwrap_or_else(|| panic!("{case}: no metric {name}"));
        close(
            &format!("{case} {name}"),
            *got,
            want.as_f64().unwrap(),
            1e-4,
            1e-6,
        );
    }
    if file.training.beta == 0.0 {
        assert!(!metrics.contains_key("kl"), "{case}: kl only with beta > 0");
    }

    // Gradients through the `--grads` writer, read back by name.
    let dir = std::env::temp_dir().join(format!("medgrpo-loss-test-{}-{case}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("grads.safetensors");
    write_matrices(&out, &report.grads).unwrap();
    let ours = std::fs::read(&out).unwrap();
    let ours = safetensors::SafeTensors::deserialize(&ours).unwrap();
    let theirs = std::fs::read(fixture_dir().join(exp["grads"].as_str().unwrap())).unwrap();
    let theirs = safetensors::SafeTensors::deserialize(&theirs).unwrap();
    let mut names: Vec<String> = ours.names().into_iter().map(str::to_string).collect();
    let mut want_names: Vec<String> = theirs.names().into_iter().map(str::to_string).collect();
    names.sort();
    want_names.sort();
    assert_eq!(names, want_names, "{case}: gradient names (PEFT keys)");
    let f32s = |t: safetensors::tensor::TensorView<'_>| -> (Vec<usize>, Vec<f32>) {
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (t.shape().to_vec(), v)
    };
    let mut nonzero = 0;
    for name in &names {
        let (s1, a) = f32s(ours.tensor(name).unwrap());
        let (s2, b) = f32s(theirs.tensor(name).unwrap());
        assert_eq!(s1, s2, "{case} {name}: shape");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            close(
                &format!("{case} grad {name}[{i}]"),
                *x as f64,
                *y as f64,
                1e-4,
                1e-5,
            );
        }
        nonzero += b.iter().any(|v| v.abs() > 1e-6) as usize;
    }
    assert_eq!(
        nonzero,
        names.len(),
        "{case}: every TRL gradient is non-trivial"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn dapo_onpolicy_matches_trl() {
    check("dapo_onpolicy");
}

#[test]
fn grpo_onpolicy_matches_trl() {
    check("grpo_onpolicy");
}

#[test]
fn bnpo_onpolicy_matches_trl() {
    check("bnpo_onpolicy");
}

#[test]
fn dr_grpo_onpolicy_matches_trl() {
    check("dr_grpo_onpolicy");
}

#[test]
fn dapo_with_clipping_matches_trl() {
    check("dapo_clip");
}

#[test]
fn grpo_with_clipping_matches_trl() {
    check("grpo_clip");
}

#[test]
fn dapo_beta_bias_corrected_kl_matches_trl() {
    check("dapo_beta_biascorr");
}

#[test]
fn dapo_beta_plain_kl_matches_trl() {
    check("dapo_beta_nobiascorr");
}

/// QLoRA: NF4 base with double quantization on every Linear of both towers (transformers'
/// bitsandbytes integration, `--quant nf4 --double-quant` here), clipping and beta > 0; a text
/// prompt (bitsandbytes' CPU quantizer is wrong for the tiny tower's 32-wide rows, see the script).
#[test]
fn nf4_base_with_clipping_and_beta_matches_trl_on_bitsandbytes() {
    check("dapo_clip_beta_nf4");
}

#[test]
fn grpo_onpolicy_beta_matches_trl() {
    check("grpo_onpolicy_beta");
}

/// Equal rewards with beta > 0: zero advantages, yet the KL term's loss and gradient match TRL;
/// the learner must run such a group (it skips it only with beta == 0).
#[test]
fn zero_spread_group_with_beta_matches_trl_and_is_not_skipped() {
    check("dapo_beta_zero_spread");
    let file = GroupFile::load(&fixture_dir().join("dapo_beta_zero_spread.json")).unwrap();
    assert!(file.advantages().unwrap().iter().all(|a| *a == 0.0));
    use crate::grpo::learner::skip_group;
    assert!(!skip_group(true, &file.training));
    let mut no_kl = file.training.clone();
    no_kl.beta = 0.0;
    assert!(skip_group(true, &no_kl));
    assert!(!skip_group(false, &no_kl));
}

//! Memory accounting of MedGemma-4B-IT from its config.json, against transformers' meta-device
//! model and bitsandbytes' storage (tests/fixtures/nf4/medgemma-4b-it/memory_ref.json, written
//! by scripts/bnb_peft_fixtures.py).

use super::*;
use crate::quant::nf4::{Nf4Config, WeightSlice, quantize};
use crate::quant::testutil::fixture;

fn load(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(rel)).unwrap()).unwrap()
}

fn medgemma() -> Value {
    load("nf4/medgemma-4b-it/config.json")
}

#[test]
fn counts_and_bytes_match_transformers_and_bitsandbytes() {
    let reference = load("nf4/medgemma-4b-it/memory_ref.json");
    let cfg = medgemma();
    for (key, opts) in [
        ("bf16", MemoryOptions::default()),
        (
            "nf4",
            MemoryOptions {
                nf4: true,
                ..Default::default()
            },
        ),
        (
            "nf4_dq",
            MemoryOptions {
                nf4: true,
                double_quant: true,
                ..Default::default()
            },
        ),
    ] {
        let r = memory_report(&cfg, &opts).unwrap();
        for name in ["language_model", "vision_tower", "projector"] {
            let want = &reference["components"][name];
            let got = r.component(name).unwrap();
            assert_eq!(
                got.params as u64,
                want["params"].as_u64().unwrap(),
                "{name} params"
            );
            assert_eq!(
                got.memory_bytes as u64,
                want[key].as_u64().unwrap(),
                "{name} {key}"
            );
            assert_eq!(
                got.stored_bytes as u64,
                want["bf16"].as_u64().unwrap(),
                "{name} stored"
            );
            if opts.nf4 {
                assert_eq!(
                    got.quantized_params as u64,
                    want["linear_params"].as_u64().unwrap(),
                    "{name} quantized"
                );
            }
        }
    }
    // The language model: ~7.76 GB in bf16, ~3.0 GB in NF4 + double quant (1.34 GB of it is the
    // bf16 token embedding, which transformers keeps dense).
    let dq = memory_report(
        &cfg,
        &MemoryOptions {
            nf4: true,
            double_quant: true,
            ..Default::default()
        },
    )
    .unwrap();
    let lm = dq.component("language_model").unwrap();
    assert!((7.7e9..7.8e9).contains(&(lm.stored_bytes as f64)));
    assert!((2.95e9..3.05e9).contains(&(lm.memory_bytes as f64)));
    let embed = 262208 * 2560 * 2;
    assert!((1.6e9..1.7e9).contains(&((lm.memory_bytes - embed) as f64)));
}

#[test]
fn nf4_bytes_is_what_bitsandbytes_and_nf4tensor_hold() {
    let reference = load("nf4/medgemma-4b-it/memory_ref.json");
    let b = &reference["bnb_2048x2560_bytes"];
    assert_eq!(
        nf4_bytes(2048 * 2560, 64, true) as u64,
        b["double_quant"].as_u64().unwrap()
    );
    assert_eq!(
        nf4_bytes(2048 * 2560, 64, false) as u64,
        b["plain"].as_u64().unwrap()
    );
    let w: Vec<f32> = (0..70 * 301).map(|i| (i as f32).sin()).collect();
    for dq in [false, true] {
        let t = quantize(
            WeightSlice::F32(&w),
            &[70, 301],
            Nf4Config {
                blocksize: 64,
                double_quant: dq,
            },
        )
        .unwrap();
        assert_eq!(t.bytes(), nf4_bytes(70 * 301, 64, dq));
    }
}

#[test]
fn lora_counts_follow_the_targets() {
    let cfg = medgemma();
    let r = memory_report(
        &cfg,
        &MemoryOptions {
            lora_r: Some(16),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.lora_layers, 34 * 7);
    // 34 layers x 16 x (q + k + v + o + gate + up + down fan-in + fan-out)
    let per_layer = (2560 + 2048) + 2 * (2560 + 1024) + (2048 + 2560) + 3 * (2560 + 10240);
    assert_eq!(r.trainable(), 34 * 16 * per_layer);
    assert_eq!(r.component("vision_tower").unwrap().lora_params, 0);
    let v = memory_report(
        &cfg,
        &MemoryOptions {
            lora_r: Some(16),
            lora_vision: true,
            ..Default::default()
        },
    )
    .unwrap();
    // PEFT's suffix rule also catches SigLIP's q/k/v_proj (not out_proj, fc1, fc2).
    assert_eq!(v.lora_layers, 34 * 7 + 27 * 3);
    assert!(
        r.render(&MemoryOptions::default())
            .contains("trainable params 29802496")
    );
}

#[test]
fn text_only_config_and_errors() {
    let mut text = medgemma()["text_config"].clone();
    let r = memory_report(&text, &MemoryOptions::default()).unwrap();
    assert_eq!(r.components.len(), 1);
    assert_eq!(r.frozen(), 3_880_263_168);
    text.as_object_mut().unwrap().remove("hidden_size");
    let e = memory_report(&text, &MemoryOptions::default()).unwrap_err();
    assert!(format!("{e:#}").contains("hidden_size"), "{e:#}");
}

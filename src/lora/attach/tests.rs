//! The tiny Gemma 3 with a PEFT adapter (non-zero B) gives PEFT's completion log-probs within
//! 1e-4, on a dense base and on a bitsandbytes NF4 (double quant) base; a fresh adapter targets
//! exactly the layers PEFT targets. Reference: tests/fixtures/lora/tiny_gemma3_peft.json from
//! scripts/bnb_peft_fixtures.py (transformers + PEFT + bitsandbytes on CPU).

use super::*;
use crate::model::gemma3::Gemma3;
use crate::model::test_util::{TB, assert_peft_logprobs, fixture, peft_reference};

fn check(nf4: bool, key: &str) {
    let r = peft_reference();
    let adapter = Adapter::load(&fixture("lora/tiny_gemma3_adapter")).unwrap();
    let cfg = nf4.then_some(Nf4Config {
        blocksize: 64,
        double_quant: true,
    });
    let mut hook = QuantLoraLoad::new(cfg, true, AdapterSource::Peft(adapter));
    let m =
        Gemma3::<TB>::load_with(&fixture("tiny-gemma3"), &Default::default(), &mut hook).unwrap();
    hook.check_all_used().unwrap();
    assert_eq!(
        hook.attached.len() as u64,
        r["lora_layers"].as_u64().unwrap()
    );
    if nf4 {
        assert_eq!(
            hook.seen.len() as u64,
            r["linear4bit_layers"].as_u64().unwrap()
        );
    }
    assert_peft_logprobs(&m, &r, key);
}

#[test]
fn peft_adapter_on_dense_tiny_gemma3_matches_peft_logprobs() {
    check(false, "lora_dense");
}

#[test]
fn peft_adapter_on_nf4_tiny_gemma3_matches_bitsandbytes_peft_logprobs() {
    check(true, "lora_nf4");
}

#[test]
fn new_adapters_target_what_peft_targets() {
    let peft = Adapter::load(&fixture("lora/tiny_gemma3_adapter")).unwrap();
    let settings = LoraSettings {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        use_rslora: false,
    };
    let mut hook = QuantLoraLoad::new(
        None,
        true,
        AdapterSource::New {
            settings,
            selector: TargetSelector::default_for(false),
            seed: 1,
        },
    );
    let _m =
        Gemma3::<TB>::load_with(&fixture("tiny-gemma3"), &Default::default(), &mut hook).unwrap();
    let mut got = hook.attached.clone();
    got.sort();
    let want: Vec<String> = peft.layers.keys().cloned().collect();
    assert_eq!(got, want);
    assert_eq!(
        peft_module_path("vision_tower.encoder.layers.0.mlp.fc1"),
        "model.vision_tower.vision_model.encoder.layers.0.mlp.fc1"
    );
}

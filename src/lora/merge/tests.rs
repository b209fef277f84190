use super::*;
use crate::model::gemma3::Gemma3;
use crate::model::test_util::{TB, assert_peft_logprobs, fixture, peft_reference};

/// The tiny Gemma 3 merged with the PEFT adapter gives PEFT's log-probs (unmerged) within
/// 1e-4, loaded by the plain dense loader; the fixture snapshot uses the hub key layout.
#[test]
fn merged_snapshot_reproduces_peft_logprobs() {
    let r = peft_reference();
    let adapter = Adapter::load(&fixture("lora/tiny_gemma3_adapter")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let n = merge_snapshot(&fixture("tiny-gemma3"), &adapter, tmp.path()).unwrap();
    assert_eq!(n as u64, r["lora_layers"].as_u64().unwrap());
    assert!(tmp.path().join("tokenizer.json").exists());
    let m = Gemma3::<TB>::load(tmp.path(), &Default::default()).unwrap();
    assert_peft_logprobs(&m, &r, "lora_dense");
}

#[test]
fn refuses_an_adapter_for_another_model() {
    let mut adapter = Adapter::load(&fixture("lora/tiny_gemma3_adapter")).unwrap();
    let (k, v) = adapter.layers.pop_first().unwrap();
    adapter
        .layers
        .insert(k.replace("layers.0.", "layers.99."), v);
    let tmp = tempfile::tempdir().unwrap();
    let e = merge_snapshot(&fixture("tiny-gemma3"), &adapter, tmp.path()).unwrap_err();
    assert!(format!("{e:#}").contains("layers.99."), "{e:#}");
}

//! Shared helpers for the model tests: fixture paths and transformers' reference outputs.

use std::path::PathBuf;

use burn::prelude::*;
use safetensors::SafeTensors;

/// CPU backend of the tests.
pub type TB = burn::backend::Flex;

/// `tests/fixtures/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `reference.json` of a fixture.
pub fn reference_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// One f32 tensor of `reference.safetensors`: (shape, values).
pub fn reference_tensor(name: &str, key: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture(name).join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap();
    let data = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (t.shape().to_vec(), data)
}

/// A JSON array of ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Values of a tensor as f32.
pub fn values<const D: usize>(t: Tensor<TB, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `lora/tiny_gemma3_peft.json`: PEFT's (and bitsandbytes + PEFT's) completion log-probs of the
/// tiny Gemma 3 with the fixture adapter.
pub fn peft_reference() -> serde_json::Value {
    let path = fixture("lora/tiny_gemma3_peft.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Asserts that `model` scores the reference's completions like `r[key]` within 1e-4.
pub fn assert_peft_logprobs(
    model: &crate::model::gemma3::Gemma3<TB>,
    r: &serde_json::Value,
    key: &str,
) {
    let prompt = crate::model::generate::Prompt::text(ids(&r["prompt"]), 0);
    let comps: Vec<Vec<u32>> = r["completions"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    let t = r["temperature"].as_f64().unwrap();
    let lp = model.completion_logprobs(&prompt, &comps, t).unwrap();
    let len = lp.dims()[1];
    let got = values(lp);
    for (g, want) in r[key].as_array().unwrap().iter().enumerate() {
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let d = max_abs_diff(&got[g * len..g * len + want.len()], &want);
        assert!(d < 1e-4, "{key}[{g}]: log-probs differ from PEFT by {d}");
    }
}

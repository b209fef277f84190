use super::*;
use crate::model::test_util::*;

fn load(name: &str) -> Gemma3<TB> {
    Gemma3::<TB>::load(&fixture(name), &Default::default()).unwrap()
}

fn pixels(name: &str) -> Tensor<TB, 4> {
    let (shape, data) = reference_tensor(name, "pixel_values");
    Tensor::from_data(
        TensorData::new(data, [shape[0], shape[1], shape[2], shape[3]]),
        &Default::default(),
    )
}

#[test]
fn image_features_match_transformers() {
    let m = load("tiny-gemma3");
    let f = m.image_features(pixels("tiny-gemma3")).unwrap();
    let (shape, want) = reference_tensor("tiny-gemma3", "image_features");
    assert_eq!(f.dims()[1..], shape[..]);
    let d = max_abs_diff(&values(f), &want);
    assert!(d < 1e-4, "image features differ by {d}");
}

#[test]
fn image_prompt_logits_match_transformers() {
    let m = load("tiny-gemma3");
    let r = reference_json("tiny-gemma3");
    let prompt = ids(&r["image_prompt"]);
    let feats = m.image_features(pixels("tiny-gemma3")).unwrap();
    let [n, t, d] = feats.dims();
    let step = Step {
        ids: vec![prompt.clone()],
        valid: None,
        image_features: Some(feats.reshape([n * t, d])),
    };
    let mut cache = m.new_cache(1);
    let logits = m.forward(&step, &mut cache, Keep::All).unwrap();
    let (shape, want) = reference_tensor("tiny-gemma3", "image_logits");
    assert_eq!(logits.dims()[1..], shape[..]);
    let diff = max_abs_diff(&values(logits), &want);
    assert!(diff < 1e-4, "image prompt logits differ by {diff}");
}

#[test]
fn text_prompt_logits_match_transformers() {
    for name in ["tiny-gemma3", "tiny-gemma3-text"] {
        let m = load(name);
        let r = reference_json(name);
        let prompt = ids(&r["text_prompt"]);
        let mut cache = m.new_cache(1);
        let logits = m
            .forward(&Step::text(vec![prompt]), &mut cache, Keep::All)
            .unwrap();
        let (_, want) = reference_tensor(name, "text_logits");
        let diff = max_abs_diff(&values(logits), &want);
        assert!(diff < 1e-4, "{name}: text prompt logits differ by {diff}");
    }
}

#[test]
fn incremental_decode_matches_full_forward() {
    // Prefill part of the prompt then feed the rest token by token: the last logits must equal
    // those of one full pass (the window of 8 is crossed, so local-layer masking is exercised).
    let m = load("tiny-gemma3");
    let prompt = ids(&reference_json("tiny-gemma3")["text_prompt"]);
    let mut cache = m.new_cache(1);
    let mut last = None;
    m.forward(
        &Step::text(vec![prompt[..5].to_vec()]),
        &mut cache,
        Keep::Last,
    )
    .unwrap();
    for &tok in &prompt[5..] {
        last = Some(
            m.forward(&Step::text(vec![vec![tok]]), &mut cache, Keep::Last)
                .unwrap(),
        );
    }
    let (_, want) = reference_tensor("tiny-gemma3", "text_logits");
    let vocab = 512;
    let want_last = &want[want.len() - vocab..];
    let diff = max_abs_diff(&values(last.unwrap()), want_last);
    assert!(diff < 1e-4, "cached decode differs by {diff}");
}

#[test]
fn model_can_be_shared_across_stage_threads() {
    // Sampler workers share one loaded model (`Arc<Gemma3<B>>`, `forward(&self)`).
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Gemma3<TB>>();
    assert_send_sync::<KvCache<TB>>();
}

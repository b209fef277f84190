use super::*;
use crate::model::test_util::*;

fn load(name: &str) -> Gemma3<TB> {
    Gemma3::<TB>::load(&fixture(name), &Default::default()).unwrap()
}

fn image_prompt(m: &Gemma3<TB>) -> Prompt<TB> {
    let r = reference_json("tiny-gemma3");
    let (shape, data) = reference_tensor("tiny-gemma3", "pixel_values");
    let px = Tensor::<TB, 4>::from_data(
        TensorData::new(data, [shape[0], shape[1], shape[2], shape[3]]),
        &Default::default(),
    );
    let f = m.image_features(px).unwrap();
    let [n, t, d] = f.dims();
    Prompt {
        ids: ids(&r["image_prompt"]),
        image_features: Some(f.reshape([n * t, d])),
        seed: 0,
    }
}

fn greedy(max: usize) -> SamplingOptions {
    SamplingOptions {
        greedy: true,
        max_new_tokens: max,
        eos_token_ids: vec![1, 6],
        ..Default::default()
    }
}

/// Greedy decoding that recomputes the whole sequence every step (no KV cache reuse).
fn greedy_no_cache(m: &Gemma3<TB>, p: &Prompt<TB>, steps: usize) -> Vec<u32> {
    let mut seq = p.ids.clone();
    let mut out = Vec::new();
    for _ in 0..steps {
        let mut cache = m.new_cache(1);
        let step = Step {
            ids: vec![seq.clone()],
            valid: None,
            image_features: p.image_features.clone(),
        };
        let logits = m.forward(&step, &mut cache, Keep::Last).unwrap();
        let tok = argmax(&values(logits));
        out.push(tok);
        seq.push(tok);
        if tok == 1 || tok == 6 {
            break;
        }
    }
    out
}

#[test]
fn greedy_tokens_match_transformers_with_and_without_cache() {
    let m = load("tiny-gemma3");
    let r = reference_json("tiny-gemma3");
    let img = image_prompt(&m);
    let text = Prompt::text(ids(&r["text_prompt"]), 0);
    for (p, key) in [(img, "image_greedy"), (text, "text_greedy")] {
        let want = ids(&r[key]);
        let got = m
            .generate(std::slice::from_ref(&p), 1, &greedy(want.len()))
            .unwrap();
        assert_eq!(got[0][0].ids, want, "{key} with cache");
        assert!(!got[0][0].stopped, "{key}: truncated, not stopped");
        assert_eq!(
            greedy_no_cache(&m, &p, want.len()),
            want,
            "{key} without cache"
        );
    }
    let mt = load("tiny-gemma3-text");
    let rt = reference_json("tiny-gemma3-text");
    let want = ids(&rt["text_greedy"]);
    let got = mt
        .generate(
            &[Prompt::text(ids(&rt["text_prompt"]), 0)],
            1,
            &greedy(want.len()),
        )
        .unwrap();
    assert_eq!(got[0][0].ids, want, "text-only model");
}

#[test]
fn left_padded_batch_matches_transformers() {
    let m = load("tiny-gemma3");
    let r = reference_json("tiny-gemma3");
    let prompts = [
        Prompt::text(ids(&r["text_prompt"]), 0),
        Prompt::text(ids(&r["short_prompt"]), 0),
    ];
    let got = m.generate(&prompts, 1, &greedy(20)).unwrap();
    let want = r["batch_left_padded_greedy"].as_array().unwrap();
    for (i, w) in want.iter().enumerate() {
        assert_eq!(got[i][0].ids, ids(w), "row {i}");
    }
}

#[test]
fn completion_logprobs_match_transformers() {
    let m = load("tiny-gemma3");
    let r = reference_json("tiny-gemma3");
    let t = r["temperature"].as_f64().unwrap();
    let cases = [
        (
            image_prompt(&m),
            "image_completions",
            "image_completion_logprobs",
        ),
        (
            Prompt::text(ids(&r["text_prompt"]), 0),
            "text_completions",
            "text_completion_logprobs",
        ),
    ];
    for (p, ck, lk) in cases {
        let comps: Vec<Vec<u32>> = r[ck].as_array().unwrap().iter().map(ids).collect();
        let lp = m.completion_logprobs(&p, &comps, t).unwrap();
        let len = lp.dims()[1];
        let got = values(lp);
        for (g, want) in r[lk].as_array().unwrap().iter().enumerate() {
            let want: Vec<f32> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let row = &got[g * len..g * len + want.len()];
            let d = max_abs_diff(row, &want);
            assert!(d < 1e-4, "{ck}[{g}]: log-probs differ by {d}");
            assert!(
                got[g * len + want.len()..(g + 1) * len]
                    .iter()
                    .all(|&x| x == 0.0),
                "padding is zero"
            );
        }
    }
}

#[test]
fn filtered_probs_match_transformers_warpers() {
    let text =
        std::fs::read_to_string(fixture("tiny-gemma3").join("sampling_reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let logits: Vec<f32> = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    for case in v["cases"].as_array().unwrap() {
        let opts = SamplingOptions {
            temperature: case["temperature"].as_f64().unwrap(),
            top_k: case["top_k"].as_u64().unwrap() as usize,
            top_p: case["top_p"].as_f64().unwrap(),
            min_p: case["min_p"].as_f64().unwrap(),
            ..Default::default()
        };
        let want: Vec<f32> = case["probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let got = filtered_probs(&logits, &opts);
        let d = max_abs_diff(&got, &want);
        assert!(d < 1e-6, "{case}: probabilities differ by {d}");
        let kept = |p: &[f32]| p.iter().map(|&x| x > 0.0).collect::<Vec<_>>();
        assert_eq!(kept(&got), kept(&want), "kept set of {opts:?}");
    }
}

#[test]
fn sampling_is_reproducible_shares_the_prefill_and_reports_consistent_logprobs() {
    let m = load("tiny-gemma3");
    let img = image_prompt(&m);
    let opts = SamplingOptions {
        temperature: 0.9,
        top_k: 40,
        top_p: 0.95,
        max_new_tokens: 12,
        eos_token_ids: vec![1, 6],
        ..Default::default()
    };
    let a = m
        .generate(
            &[Prompt {
                seed: 7,
                ..img.clone()
            }],
            3,
            &opts,
        )
        .unwrap();
    let b = m
        .generate(
            &[Prompt {
                seed: 7,
                ..img.clone()
            }],
            3,
            &opts,
        )
        .unwrap();
    assert_eq!(a, b, "same seed, same completions");
    assert_ne!(
        a[0][0].ids, a[0][1].ids,
        "completions of one prompt use different streams"
    );
    let c = m
        .generate(
            &[Prompt {
                seed: 8,
                ..img.clone()
            }],
            3,
            &opts,
        )
        .unwrap();
    assert_ne!(a, c, "another seed gives other completions");
    // Batch composition does not change a completion: prompt seeded 7 alongside another prompt.
    let other = Prompt::text(ids(&reference_json("tiny-gemma3")["short_prompt"]), 99);
    let d = m
        .generate(
            &[
                other,
                Prompt {
                    seed: 7,
                    ..img.clone()
                },
            ],
            3,
            &opts,
        )
        .unwrap();
    for g in 0..3 {
        assert_eq!(
            d[1][g].ids, a[0][g].ids,
            "completion {g} independent of the batch"
        );
        let diff = max_abs_diff(&d[1][g].logprobs, &a[0][g].logprobs);
        assert!(diff < 1e-4, "log-probs within batch differ by {diff}");
    }
    // The sampler's log-probs equal the teacher-forced ones, and every token is inside top-k.
    let comps: Vec<Vec<u32>> = a[0].iter().map(|c| c.ids.clone()).collect();
    let tf = m
        .completion_logprobs(&img, &comps, opts.temperature)
        .unwrap();
    let len = tf.dims()[1];
    let tf = values(tf);
    for (g, c) in a[0].iter().enumerate() {
        let d = max_abs_diff(&c.logprobs, &tf[g * len..g * len + c.ids.len()]);
        assert!(
            d < 1e-4,
            "sampler vs teacher-forced log-probs differ by {d}"
        );
        assert_eq!(c.ids.len(), 12);
        assert!(!c.stopped);
    }
}

#[test]
fn stops_on_every_eos_id_and_keeps_the_stop_token() {
    let m = load("tiny-gemma3");
    let r = reference_json("tiny-gemma3");
    let want = ids(&r["text_greedy"]);
    // Declare the 3rd greedy token an eos id, next to the real ones.
    let opts = SamplingOptions {
        eos_token_ids: vec![1, want[2], 6],
        ..greedy(20)
    };
    let got = m
        .generate(&[Prompt::text(ids(&r["text_prompt"]), 0)], 2, &opts)
        .unwrap();
    for c in &got[0] {
        assert_eq!(c.ids, want[..3].to_vec());
        assert!(c.stopped);
        assert_eq!(c.logprobs.len(), 3);
    }
    // Rows that stop early are dropped while others continue (left-padded batch).
    let opts = SamplingOptions {
        eos_token_ids: vec![want[2]],
        ..greedy(20)
    };
    let prompts = [
        Prompt::text(ids(&r["text_prompt"]), 0),
        Prompt::text(ids(&r["short_prompt"]), 0),
    ];
    let got = m.generate(&prompts, 1, &opts).unwrap();
    assert_eq!(got[0][0].ids, want[..3].to_vec());
    let short = r["batch_left_padded_greedy"][1].clone();
    assert_eq!(got[1][0].ids, ids(&short));
    assert!(!got[1][0].stopped);
}

#[test]
fn teacher_forced_logprobs_are_differentiable() {
    // The learner differentiates completion log-probs (prompt once, forked to G completions).
    // Make one weight trainable on an autodiff backend and check its gradient is finite, non-zero.
    use burn::module::Param;
    type AD = burn::backend::Autodiff<TB>;
    let mut m = Gemma3::<AD>::load(&fixture("tiny-gemma3"), &Default::default()).unwrap();
    let w = m.language_model.norm.weight.val().detach().require_grad();
    m.language_model.norm.weight = Param::from_tensor(w.clone());
    let r = reference_json("tiny-gemma3");
    let comps: Vec<Vec<u32>> = r["text_completions"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    let lp = m
        .completion_logprobs(&Prompt::text(ids(&r["text_prompt"]), 0), &comps, 0.7)
        .unwrap();
    let grads = lp.sum().backward();
    let g = m
        .language_model
        .norm
        .weight
        .val()
        .grad(&grads)
        .expect("gradient of the norm weight");
    let g: Vec<f32> = g.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    assert!(g.iter().all(|x| x.is_finite()));
    assert!(g.iter().any(|&x| x != 0.0));
}

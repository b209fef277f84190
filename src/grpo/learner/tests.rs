//! The learner with `beta > 0` inside the real training chain (tiny VLM, demo data): the
//! reference is the policy with its adapters disabled, so with fresh adapters (B = 0) the first
//! step's KL is exactly 0 and, once the adapter has moved, positive; `kl` and `entropy` are logged.
//! The loss/gradient maths itself is checked against TRL in `commands::loss::tests`.

use std::path::Path;

use crate::config::Config;
use crate::grpo::train::train;

type AB = burn::backend::Autodiff<burn::backend::Flex>;

fn config(dir: &Path, beta: f64) -> Config {
    crate::grpo::train::tiny_demo_config(
        dir,
        &[
            "training.max_steps=2".into(),
            "training.save_steps=100".into(),
            "training.max_completion_length=12".into(),
            format!("training.beta={beta}"),
        ],
    )
}

fn run(beta: f64) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), beta);
    crate::demo::synth::generate(&dir.path().join("data"), "train", 16, 32, cfg.seed).unwrap();
    let summary = train::<AB>(&cfg, &Default::default(), None, false).unwrap();
    assert_eq!(summary.steps, 2);
    std::fs::read_to_string(dir.path().join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn beta_trains_against_the_adapter_free_reference_and_logs_kl_and_entropy() {
    let m = run(0.04);
    assert_eq!(m.len(), 2);
    let f = |i: usize, k: &str| {
        m[i][k]
            .as_f64()
            .unwrap_or_else(|| panic!("step {i}: no {k} in {}", m[i]))
    };
    // Step 1: fresh adapters (B = 0), so policy == reference: KL exactly 0.
    assert!(f(0, "kl").abs() < 1e-7, "kl at step 1: {}", f(0, "kl"));
    assert!(f(1, "kl") > 0.0, "kl after an update: {}", f(1, "kl"));
    for i in 0..2 {
        let e = f(i, "entropy");
        // tiny-gemma3 has 512 tokens: 0 < entropy <= ln 512.
        assert!(e > 0.0 && e <= (512f64).ln() + 1e-4, "entropy {e}");
        assert!(f(i, "loss").is_finite() && f(i, "grad_norm").is_finite());
    }
}

/// With `beta == 0` zero-spread groups are skipped, so `entropy` (a mean over the groups the
/// learner ran) is logged exactly when some group had a reward spread; never `kl`.
#[test]
fn beta_zero_logs_no_kl_and_entropy_only_for_groups_it_ran() {
    let m = run(0.0);
    for s in &m {
        assert!(s.get("kl").is_none());
        let all_skipped = s["frac_reward_zero_std"].as_f64().unwrap() == 1.0;
        assert_eq!(s.get("entropy").is_none(), all_skipped, "{s}");
    }
}

/// The batched scoring of a step (all groups in one forward/backward, prompts of different
/// lengths left-padded, each with its own image) gives what scoring each group on its own gives
/// — and the single-group path is the one checked against TRL (`commands::loss::tests`): the
/// loss, every LoRA gradient, and the per-token log-probs, entropies and reference log-probs,
/// with off-policy old log-probs on one group only and `beta > 0` (reference computed).
#[test]
fn one_batched_forward_over_the_step_matches_group_by_group() {
    use burn::module::AutodiffModule;
    use burn::prelude::*;

    use crate::grpo::group_loss::GroupFile;
    use crate::grpo::learner::{GroupInput, loss_and_grads};
    use crate::grpo::loss::Normalizer;
    use crate::lora::extract::lora_grads;
    use crate::lora::load::{Adapters, ModelLoad};
    use crate::model::generate::Prompt;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("tests/fixtures/grpo-vlm");
    let file = GroupFile::load(&fixtures.join("grpo_clip.json")).unwrap();
    let model = ModelLoad::base(&Default::default())
        .with_adapters(Adapters::Peft(fixtures.join("adapter")))
        .load(
            &root.join("tests/fixtures/tiny-gemma3"),
            &Default::default(),
        )
        .unwrap();
    let mut cfg = file.training.clone();
    cfg.beta = 0.04;
    let g0 = &file.groups[0];
    // Second prompt: 5 text tokens shorter (dropped right after <bos>), image block kept.
    let mut ids1 = vec![g0.prompt_ids[0]];
    ids1.extend_from_slice(&g0.prompt_ids[6..]);
    let completions1: Vec<Vec<u32>> = vec![
        vec![17, 23, 99],
        vec![5, 6, 7, 8, 9, 10, 11, 12],
        vec![40],
        vec![41, 42],
    ];
    let inner = model.valid();
    let size = inner.config.vision.as_ref().unwrap().image_size;
    let features = |seed: u64| {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..3 * size * size)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let px =
            Tensor::<<AB as burn::tensor::backend::AutodiffBackend>::InnerBackend, 4>::from_data(
                TensorData::new(v, [1, 3, size, size]),
                &Default::default(),
            );
        let f = inner.image_features(px).unwrap();
        let [n, t, d] = f.dims();
        Tensor::<AB, 2>::from_inner(f.reshape([n * t, d]))
    };
    let (f0, f1) = (features(0), features(1));
    let old0 = g0.old_logps.clone().unwrap();
    let tokens: Vec<usize> = g0
        .completion_ids
        .iter()
        .chain(&completions1)
        .map(Vec::len)
        .collect();
    let normalizer = Normalizer::for_step(&cfg, &tokens).unwrap();
    let group = |which: usize| GroupInput::<AB> {
        label: format!("group {which}"),
        prompt: Prompt {
            ids: if which == 0 {
                g0.prompt_ids.clone()
            } else {
                ids1.clone()
            },
            image_features: Some(if which == 0 { f0.clone() } else { f1.clone() }),
            seed: 0,
        },
        completion_ids: if which == 0 {
            &g0.completion_ids
        } else {
            &completions1
        },
        old_logps: (which == 0).then_some(old0.as_slice()),
        ref_logps: None,
        advantages: if which == 0 {
            vec![1.0, -0.5, 0.25, -0.75]
        } else {
            vec![-1.0, 0.5, 0.8, -0.3]
        },
        rows: (which * 4..which * 4 + 4).collect(),
        skip: false,
        dropout_seed: None,
    };
    let both = loss_and_grads(&model, &[group(0), group(1)], &cfg, &normalizer, true).unwrap();
    let one = loss_and_grads(&model, &[group(0)], &cfg, &normalizer, true).unwrap();
    let two = loss_and_grads(&model, &[group(1)], &cfg, &normalizer, true).unwrap();
    let sum = one.metrics.loss + two.metrics.loss;
    assert!(
        (both.metrics.loss - sum).abs() <= 1e-5 * sum.abs().max(1e-3),
        "batched loss {} vs {sum}",
        both.metrics.loss
    );
    let gb = lora_grads(&model, both.grads.as_ref().unwrap());
    let g1 = lora_grads(&model, one.grads.as_ref().unwrap());
    let g2 = lora_grads(&model, two.grads.as_ref().unwrap());
    assert!(!gb.is_empty());
    for (name, (shape, v)) in &gb {
        let (a, b) = (&g1[name].1, &g2[name].1);
        assert_eq!(*shape, g1[name].0);
        let scale = v.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
        for (i, x) in v.iter().enumerate() {
            let want = a[i] + b[i];
            assert!(
                (x - want).abs() <= 1e-4 * scale,
                "{name}[{i}]: batched {x} vs {want} (largest {scale})"
            );
        }
    }
    let values = |o: &crate::grpo::learner::StepGrads, i: usize| o.values[i].clone().unwrap();
    for (batched, alone) in [
        (values(&both, 0), values(&one, 0)),
        (values(&both, 1), values(&two, 0)),
    ] {
        for (what, x, y) in [
            ("logps", &batched.logps, &alone.logps),
            ("entropy", &batched.entropy, &alone.entropy),
            (
                "ref",
                batched.ref_logps.as_ref().unwrap(),
                alone.ref_logps.as_ref().unwrap(),
            ),
        ] {
            assert_eq!(x.len(), y.len());
            for (r, (p, q)) in x.iter().zip(y).enumerate() {
                assert_eq!(p.len(), q.len(), "{what}[{r}] length");
                for (a, b) in p.iter().zip(q) {
                    assert!((a - b).abs() <= 2e-5, "{what}[{r}]: {a} vs {b}");
                }
            }
        }
    }
}

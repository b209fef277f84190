use super::*;
use crate::grpo::prompt::{PromptBuilder, PromptInput};
use crate::grpo::reward::{Reference, RewardBreakdown, score};
use crate::lora::adapter::Adapter;
use crate::lora::load::inference_model;

type B = burn::backend::Flex;

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-gemma3");
const ADAPTER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/lora/tiny_gemma3_adapter"
);

/// The demo's settings on the tiny VLM with `n` synthetic val questions in `dir/data`,
/// images already at the tower's 32×32 (so no resize differs between code paths).
fn setup(dir: &Path, n: usize) -> Config {
    let mut overrides = crate::demo::overrides_under(dir);
    overrides.extend([
        "shards.image_size=32".into(),
        "training.max_completion_length=12".into(),
        "rewards.weights.explanation=0.6".into(),
        "rewards.weights.evidence=0.2".into(),
        "rewards.weights.conciseness=0.1".into(),
        format!("model.path={TINY}"),
    ]);
    let cfg =
        Config::from_yaml_str(include_str!("../../../pipelines/demo.yaml"), &overrides).unwrap();
    crate::demo::synth::generate(&dir.join("data"), "val", n, 32, cfg.seed).unwrap();
    cfg
}

/// Rewrites the val split's `category` / `task_name` fields with `f(index)`.
fn relabel(dir: &Path, f: impl Fn(usize) -> (Option<&'static str>, Option<&'static str>)) {
    let path = dir.join("data/val.json");
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (i, (_, rec)) in v.iter_mut().enumerate() {
        let rec = rec.as_object_mut().unwrap();
        let (cat, task) = f(i);
        for (key, val) in [("category", cat), ("task_name", task)] {
            match val {
                Some(s) => rec.insert(key.into(), s.into()),
                None => rec.remove(key),
            };
        }
    }
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

fn read_predictions(path: &Path) -> Vec<Prediction> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn opts(predictions: Option<PathBuf>) -> EvalOptions {
    EvalOptions {
        split: Split::Val,
        limit: None,
        progress: false,
        predictions,
        batch_size: 1,
    }
}

fn pred(id: &str, answer: &str, got: Option<&str>, cat: Option<&str>, fmt: f64) -> Prediction {
    Prediction {
        id: id.into(),
        correct_answer: answer.into(),
        predicted: got.map(String::from),
        completion: String::new(),
        tokens: 10,
        stopped: fmt > 0.0,
        rewards: RewardBreakdown {
            correct: f64::from(u8::from(got == Some(answer))),
            explanation: 0.5,
            evidence: 0.25,
            format: fmt,
            conciseness: 1.0,
            total: 2.0,
            letter: None,
        },
        category: cat.map(String::from),
        task_name: None,
    }
}

/// The tally on hand-made predictions: right, wrong, unanswered, grouped.
#[test]
fn tally_counts_right_wrong_and_unanswered_per_group() {
    let mut t = Tally::default();
    for p in [
        pred("1", "A", Some("A"), Some("x"), 1.0),
        pred("2", "B", Some("C"), Some("x"), 1.0),
        pred("3", "C", None, Some("y"), 0.0),
        pred("4", "D", Some("D"), None, 0.0),
    ] {
        t.add(&p);
    }
    let r = t.report(Split::Test, (1, 2), Vec::new(), 0.0);
    assert_eq!((r.n, r.correct, r.accuracy), (4, 2, 0.5));
    assert_eq!(r.answered_rate, 0.75);
    assert_eq!(r.format_rate, 0.5);
    assert_eq!(r.truncated_rate, 0.5);
    assert_eq!(r.rewards.correct, 0.5);
    assert_eq!(r.rewards.total, 2.0);
    assert_eq!(r.mean_completion_tokens, 10.0);
    assert_eq!(r.by_category["x"], GroupAccuracy { n: 2, correct: 1 });
    assert_eq!(r.by_category["y"], GroupAccuracy { n: 1, correct: 0 });
    assert_eq!(
        r.by_category.len(),
        2,
        "a record without category is in no group"
    );
    assert!(r.by_task.is_empty());
    assert_eq!((r.rejected, r.failed), (1, 2));
    let text = r.render();
    assert!(text.contains("50.0% (2/4)"), "{text}");
    assert!(text.contains("per category"), "{text}");
    assert!(!text.contains("per task_name"), "{text}");
    let j = r.to_json();
    assert_eq!(j["by_category"]["x"]["accuracy"], 0.5);
    assert_eq!(j["rewards"]["explanation"], 0.5);
    assert_eq!(j["split"], "test");
}

/// End to end on the tiny VLM: every figure of the report is recounted by hand from the
/// predictions file and the dataset's own answers, and each line's rewards equal the
/// training scorer on the line's completion against the dataset's fields.
#[test]
fn report_equals_counts_from_the_predictions_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 6);
    relabel(dir.path(), |i| {
        (
            Some(if i % 2 == 0 { "even" } else { "odd" }),
            (i < 4).then_some("first-four"),
        )
    });
    let model = inference_model::<B>(&cfg, None, &Default::default()).unwrap();
    let file = dir.path().join("out/predictions.jsonl");
    let r = evaluate(&cfg, &model, &opts(Some(file.clone()))).unwrap();
    let preds = read_predictions(&file);
    let data: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("data/val.json")).unwrap())
            .unwrap();
    let ids: Vec<&String> = data.keys().collect();
    assert_eq!(
        preds.iter().map(|p| &p.id).collect::<Vec<_>>(),
        ids,
        "file order"
    );
    let (mut correct, mut answered, mut fmt, mut total, mut tokens) = (0, 0, 0.0, 0.0, 0);
    let mut even = GroupAccuracy::default();
    for p in &preds {
        let rec = &data[&p.id];
        let answer = rec["correct_answer"].as_str().unwrap();
        assert_eq!(p.correct_answer, answer);
        let ok = p.predicted.as_deref() == Some(answer);
        correct += usize::from(ok);
        answered += usize::from(p.predicted.is_some());
        fmt += p.rewards.format;
        total += p.rewards.total;
        tokens += p.tokens;
        if rec["category"] == "even" {
            even.n += 1;
            even.correct += usize::from(ok);
        }
        assert_eq!(p.category.as_deref(), rec["category"].as_str());
        // The training scorer on the completion text, with the dataset's fields.
        let reference = Reference::new(
            answer.chars().next().unwrap(),
            rec["correct_answer_explanation"].as_str().unwrap(),
            rec["Findings"].as_str().unwrap(),
            rec["Impression"].as_str().unwrap(),
        )
        .unwrap();
        let b = score(&p.completion, &reference, &cfg.rewards);
        // (JSON round trip: serde_json parses floats to within an ulp or so.)
        let values = |r: &RewardBreakdown| r.components().into_iter().chain([r.total]);
        for (got, want) in values(&p.rewards).zip(values(&b)) {
            assert!(
                (got - want).abs() < 1e-12,
                "{}: {:?} vs {b:?}",
                p.id,
                p.rewards
            );
        }
        assert_eq!(p.predicted, b.letter.map(String::from));
        assert!(p.tokens >= 1 && p.tokens <= 12);
    }
    let n = preds.len();
    assert_eq!(n, 6);
    assert_eq!(r.n, n);
    assert_eq!(r.correct, correct);
    assert_eq!(r.accuracy, correct as f64 / n as f64);
    assert_eq!(r.answered_rate, answered as f64 / n as f64);
    assert!((r.format_rate - fmt / n as f64).abs() < 1e-12);
    assert!((r.rewards.total - total / n as f64).abs() < 1e-12);
    assert!(
        r.rewards.total > 0.0,
        "some reward (evidence, F1 or length)"
    );
    assert_eq!(r.mean_completion_tokens, tokens as f64 / n as f64);
    assert_eq!(r.by_category["even"], even);
    assert_eq!(r.by_category["even"].n, 3);
    assert_eq!(r.by_category["odd"].n, 3);
    assert_eq!(r.by_task.len(), 1);
    assert_eq!(r.by_task["first-four"].n, 4);
    assert_eq!((r.rejected, r.failed), (0, 0));
    assert!(r.render().contains("per category"));
    assert!(r.render().contains("first-four"));
}

/// An adapter that changes the greedy outputs changes the report, and `compare` shows both.
/// The fixture adapter's B is scaled up so its effect is far from any near-tie. The random
/// tiny model's gibberish scores alike whatever it says, so the reference explanations are
/// then set to the base model's own answers: the base earns the full explanation reward and
/// the adapter, saying something else, less.
#[test]
fn an_adapter_that_changes_outputs_changes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 4);
    let mut adapter = Adapter::load(Path::new(ADAPTER)).unwrap();
    for pair in adapter.layers.values_mut() {
        for x in &mut pair.b.data {
            *x *= 200.0;
        }
    }
    let adir = dir.path().join("adapter");
    adapter.save(&adir).unwrap();
    let base = inference_model::<B>(&cfg, None, &Default::default()).unwrap();
    let tuned = inference_model::<B>(&cfg, Some(&adir), &Default::default()).unwrap();
    let (fb, ft) = (dir.path().join("b.jsonl"), dir.path().join("t.jsonl"));
    evaluate(&cfg, &base, &opts(Some(fb.clone()))).unwrap();
    evaluate(&cfg, &tuned, &opts(Some(ft.clone()))).unwrap();
    let (pb, pt) = (read_predictions(&fb), read_predictions(&ft));
    let changed = pb
        .iter()
        .zip(&pt)
        .filter(|(a, b)| a.completion != b.completion)
        .count();
    assert!(changed > 0, "the adapter must change some completion");

    let path = dir.path().join("data/val.json");
    let mut data: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for p in &pb {
        data[&p.id]["correct_answer_explanation"] = p.completion.clone().into();
    }
    std::fs::write(&path, serde_json::to_string(&data).unwrap()).unwrap();
    let rb = evaluate(&cfg, &base, &opts(None)).unwrap();
    let rt = evaluate(&cfg, &tuned, &opts(None)).unwrap();
    assert!(
        rb.rewards.explanation > rt.rewards.explanation,
        "base {:?} vs adapter {:?}",
        rb.rewards,
        rt.rewards
    );
    assert!(rb.rewards.total > rt.rewards.total);
    let table = compare(&rb, &rt);
    assert!(table.contains("base") && table.contains("adapter") && table.contains("Δ"));
    let line = table
        .lines()
        .find(|l| l.starts_with("rewards/explanation"))
        .unwrap();
    assert!(
        line.trim_end().ends_with(&format!(
            "{:+.4}",
            rt.rewards.explanation - rb.rewards.explanation
        )),
        "{table}"
    );
    assert!(table.contains("category localization"), "{table}");
    // A missing adapter is an error, not a silent base model.
    assert!(
        inference_model::<B>(&cfg, Some(&dir.path().join("nope")), &Default::default()).is_err()
    );
}

/// `limit` evaluates the first N records of the file, with the same answers as a full run
/// (deterministic), and a bad image is skipped and named, not silently dropped.
#[test]
fn limit_takes_the_first_records_and_bad_images_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 4);
    let model = inference_model::<B>(&cfg, None, &Default::default()).unwrap();
    let (fa, fl) = (dir.path().join("all.jsonl"), dir.path().join("lim.jsonl"));
    let all = evaluate(&cfg, &model, &opts(Some(fa.clone()))).unwrap();
    let lim = evaluate(
        &cfg,
        &model,
        &EvalOptions {
            limit: Some(2),
            ..opts(Some(fl.clone()))
        },
    )
    .unwrap();
    assert_eq!((all.n, lim.n), (4, 2));
    let (pa, pl) = (read_predictions(&fa), read_predictions(&fl));
    assert_eq!(pl[..], pa[..2]);
    assert_eq!(pl[0].id, "demo-val-00000");

    std::fs::remove_file(dir.path().join("data/images/demo-val-00001.png")).unwrap();
    let r = evaluate(&cfg, &model, &opts(None)).unwrap();
    assert_eq!((r.n, r.failed, r.rejected), (3, 1, 0));
    assert_eq!(r.failures[0].id, "demo-val-00001");
    assert_eq!(r.failures[0].stage, "loader");
    assert!(r.render().contains("demo-val-00001"));
    // Under `abort` the same record stops the evaluation, naming it.
    let mut strict = cfg.clone();
    strict.data.on_bad_item = crate::config::OnBadItem::Abort;
    let e = format!("{:#}", evaluate(&strict, &model, &opts(None)).unwrap_err());
    assert!(e.contains("demo-val-00001"), "{e}");
    // A split the config does not name is a clear error.
    let e = evaluate(
        &cfg,
        &model,
        &EvalOptions {
            split: Split::Test,
            ..opts(None)
        },
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("data.test"), "{e:#}");
}

/// Greedy eval decodes exactly what `medgrpo generate --greedy` prints for the same prompt
/// ids and image (the command's own loading and prompt code), and batching prompts of equal
/// length changes nothing.
#[test]
fn greedy_eval_equals_generate_and_batching() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 3);
    let model = inference_model::<B>(&cfg, Some(Path::new(ADAPTER)), &Default::default()).unwrap();
    let file = dir.path().join("p.jsonl");
    evaluate(&cfg, &model, &opts(Some(file.clone()))).unwrap();
    let preds = read_predictions(&file);

    let split = load_split(&dir.path().join("data/val.json"), &cfg.data).unwrap();
    let processor = Arc::new(Gemma3Processor::from_dir(TINY).unwrap());
    let builder = PromptBuilder::new(processor.clone(), cfg.prompt.clone());
    for (rec, p) in split.records.iter().zip(&preds) {
        let built = builder.build(&PromptInput::from(rec)).unwrap();
        let args = crate::commands::model_args::PromptArgs {
            model: crate::commands::model_args::ModelArgs {
                model: PathBuf::from(TINY),
                adapter: Some(PathBuf::from(ADAPTER)),
                quant: None,
                double_quant: false,
                device: crate::config::Device::Cpu,
            },
            image: Some(rec.image_paths[0].clone()),
            prompt: None,
            system: None,
            input_ids: Some(
                built
                    .input_ids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        };
        let (loaded, prompt) = args.load_prompt::<burn::backend::Flex>().unwrap();
        let g = &loaded.generation;
        let sampling = SamplingOptions {
            greedy: true,
            temperature: g.temperature,
            top_k: g.top_k,
            top_p: g.top_p,
            min_p: g.min_p,
            max_new_tokens: 12,
            eos_token_ids: g.eos_token_ids.clone(),
            pad_token_id: g.pad_token_id,
        };
        let out = loaded.model.generate(&[prompt], 1, &sampling).unwrap();
        let text = loaded
            .tokenizer
            .as_ref()
            .unwrap()
            .decode(&out[0][0].ids, true)
            .unwrap();
        assert_eq!(p.completion, text, "question {}", rec.id);
        assert_eq!(p.tokens, out[0][0].ids.len());
    }

    let batched = dir.path().join("b.jsonl");
    evaluate(
        &cfg,
        &model,
        &EvalOptions {
            batch_size: 2,
            ..opts(Some(batched.clone()))
        },
    )
    .unwrap();
    assert_eq!(read_predictions(&batched), preds);
}

/// The demo's use: the training policy (`load_policy` on the autodiff backend, fresh LoRA
/// with B = 0) evaluated in memory, directly or through `.valid()`, answers exactly as the
/// base model loaded for inference.
#[test]
fn the_training_policy_evaluates_in_memory_like_the_base() {
    use burn::module::AutodiffModule;
    type AB = burn::backend::Autodiff<B>;
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 2);
    let base = inference_model::<B>(&cfg, None, &Default::default()).unwrap();
    let policy = crate::lora::load::ModelLoad::policy(&cfg, None)
        .load::<AB>(Path::new(TINY), &Default::default())
        .unwrap();
    let files: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("{i}.jsonl")))
        .collect();
    let a = evaluate(&cfg, &base, &opts(Some(files[0].clone()))).unwrap();
    let b = evaluate(&cfg, &policy.valid(), &opts(Some(files[1].clone()))).unwrap();
    let c = evaluate(&cfg, &policy, &opts(Some(files[2].clone()))).unwrap();
    assert_eq!(a.n, 2);
    let p0 = read_predictions(&files[0]);
    assert_eq!(read_predictions(&files[1]), p0);
    assert_eq!(read_predictions(&files[2]), p0);
    assert_eq!((a.rewards, a.accuracy), (b.rewards, b.accuracy));
    assert_eq!((a.rewards, a.accuracy), (c.rewards, c.accuracy));
}

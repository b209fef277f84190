use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: EvalArgs,
}

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-gemma3");
const ADAPTER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/lora/tiny_gemma3_adapter"
);

/// The command's whole path on the tiny VLM, from the argument parser on: `--adapter`
/// with `--base` evaluates both, prints one table, and writes eval.json with both reports
/// and both predictions files; `--quant nf4` and `--set` reach the config.
#[test]
fn adapter_and_base_give_one_table_and_eval_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::demo::synth::generate(&d.join("data"), "val", 3, 32, 7).unwrap();
    let yaml = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/demo.yaml");
    let sets = [
        format!("model.path={TINY}"),
        format!("data.val={}/data/val.json", d.display()),
        format!("data.train={}/data/train.json", d.display()),
        format!("shards.dir={}/shards", d.display()),
        "shards.image_size=32".into(),
        "training.max_completion_length=8".into(),
    ];
    let mut argv: Vec<String> = vec!["eval".into(), yaml.into()];
    for s in &sets {
        argv.extend(["--set".into(), s.clone()]);
    }
    let out = d.join("out");
    argv.extend(
        [
            "--adapter",
            ADAPTER,
            "--base",
            "--limit",
            "2",
            "--quant",
            "nf4",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let args = Cli::try_parse_from(&argv).unwrap().args;
    assert_eq!(args.split, Split::Val);
    let config = resolve_config(&args).unwrap();
    assert!(config.quantization.load_in_4bit);
    assert_eq!(config.training.max_completion_length, 8);
    let o = eval_on::<burn::backend::Flex>(&config, &args, &Default::default(), false).unwrap();
    let (b, a) = (o.base.unwrap(), o.adapter.unwrap());
    assert_eq!((b.n, a.n), (2, 2));
    assert!(
        o.text.contains("adapter") && o.text.contains("Δ"),
        "{}",
        o.text
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&o.json_path).unwrap()).unwrap();
    assert_eq!(o.json_path, out.join("eval.json"));
    assert_eq!(j["quantization"], "nf4");
    assert_eq!(j["results"]["base"]["n"], 2);
    assert_eq!(j["results"]["adapter"]["accuracy"], a.accuracy);
    for name in ["predictions-base.jsonl", "predictions-adapter.jsonl"] {
        let lines = std::fs::read_to_string(out.join(name)).unwrap();
        assert_eq!(lines.lines().count(), 2, "{name}");
    }

    // --predictions names the adapter's file; the base run's goes next to it.
    let p = d.join("preds/mine.jsonl");
    let mut argv2 = argv.clone();
    argv2.extend(["--predictions".into(), p.display().to_string()]);
    let args = Cli::try_parse_from(&argv2).unwrap().args;
    eval_on::<burn::backend::Flex>(&config, &args, &Default::default(), false).unwrap();
    assert!(p.exists() && d.join("preds/mine.base.jsonl").exists());
}

#[test]
fn double_quant_needs_nf4_and_splits_parse() {
    let yaml = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/demo.yaml");
    let args = Cli::try_parse_from(["eval", yaml, "--double-quant", "--quant", "none"])
        .unwrap()
        .args;
    assert!(format!("{:#}", resolve_config(&args).unwrap_err()).contains("--double-quant"));
    let args = Cli::try_parse_from(["eval", yaml, "--split", "test"])
        .unwrap()
        .args;
    assert_eq!(args.split, Split::Test);
    assert!(Cli::try_parse_from(["eval", yaml, "--split", "dev"]).is_err());
    assert!(Cli::try_parse_from(["eval", yaml, "--quant", "fp4"]).is_err());
}

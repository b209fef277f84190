use super::*;

const TRAIN: &str = include_str!("../../pipelines/train.yaml");

fn err(text: &str, overrides: &[&str]) -> String {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    format!("{:#}", Config::from_yaml_str(text, &o).unwrap_err())
}

#[test]
fn train_yaml_has_the_originals_settings() {
    let c = Config::from_yaml_str(TRAIN, &[]).unwrap();
    assert!(c.quantization.load_in_4bit && c.quantization.bnb_4bit_use_double_quant);
    assert_eq!(
        (c.lora.r, c.lora.lora_alpha, c.lora.lora_dropout),
        (16, 32.0, 0.05)
    );
    assert_eq!(c.lora.target_modules.len(), 7);
    let t = &c.training;
    assert_eq!(
        (t.per_device_train_batch_size, t.gradient_accumulation_steps),
        (1, 8)
    );
    assert_eq!((t.num_generations, t.max_completion_length), (4, 128));
    assert_eq!((t.learning_rate, t.beta), (5e-6, 0.0));
    assert_eq!(
        (t.loss_type, t.scale_rewards),
        (LossType::Dapo, ScaleRewards::Group)
    );
    assert_eq!(t.prompts_per_step(), 2);
    let w = &c.rewards.weights;
    assert_eq!(
        [
            w.correct,
            w.explanation,
            w.evidence,
            w.format,
            w.conciseness
        ],
        [1.0, 0.6, 0.2, 0.1, 0.1]
    );
    assert_eq!(c.rewards.conciseness_max_chars, 220);
    assert_eq!(
        c.stages.get("sampler", StageSettings::new(9, 9)),
        StageSettings::new(1, 4)
    );
}

#[test]
fn generations_not_dividing_the_batch_names_both_fields() {
    let e = err(TRAIN, &["training.num_generations=3"]);
    assert!(e.contains("training.num_generations"), "{e}");
    assert!(e.contains("training.per_device_train_batch_size"), "{e}");
    assert!(e.contains("training.gradient_accumulation_steps"), "{e}");
    assert!(e.contains("not divisible"), "{e}");
}

#[test]
fn unknown_keys_are_errors_naming_the_path() {
    let e = err(TRAIN, &["training.num_generationz=4"]);
    assert!(
        e.contains("training.num_generationz")
            || e.contains("training: unknown field `num_generationz`"),
        "{e}"
    );
    let e = err(&TRAIN.replace("  r: 16", "  rank: 16"), &[]);
    assert!(e.contains("lora") && e.contains("rank"), "{e}");
    let e = err(
        TRAIN,
        &["stages.samplr.workers=2", "stages.samplr.capacity=2"],
    );
    assert!(e.contains("stages.samplr"), "{e}");
}

#[test]
fn invalid_values_name_the_field() {
    let e = err(TRAIN, &["training.loss_type=ppo"]);
    assert!(e.contains("training.loss_type") && e.contains("ppo"), "{e}");
    let e = err(TRAIN, &["training.learning_rate=abc"]);
    assert!(e.contains("training.learning_rate"), "{e}");
    let e = err(TRAIN, &["lora.r=0"]);
    assert!(e.contains("lora.r"), "{e}");
    let e = err("seed: 1\n", &[]);
    assert!(e.contains("model"), "{e}");
}

#[test]
fn overrides_take_yaml_values() {
    let c = Config::from_yaml_str(
        TRAIN,
        &[
            "training.learning_rate=1e-5".into(),
            "lora.target_modules=[q_proj, v_proj]".into(),
            "model.path=/tmp/x=y".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.training.learning_rate, 1e-5);
    assert_eq!(c.lora.target_modules, ["q_proj", "v_proj"]);
    assert_eq!(c.model.path, "/tmp/x=y");
    assert!(
        format!(
            "{:#}",
            Config::from_yaml_str(TRAIN, &["novalue".into()]).unwrap_err()
        )
        .contains("key.path=value")
    );
}

#[test]
fn resolved_config_round_trips() {
    let c = Config::from_yaml_str(TRAIN, &["seed=7".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    c.write_resolved(dir.path()).unwrap();
    let back = Config::load(&dir.path().join("config.yaml"), &[]).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.seed, 7);
}

#[test]
fn demo_yaml_is_valid() {
    let c = Config::from_yaml_str(include_str!("../../pipelines/demo.yaml"), &[]).unwrap();
    assert_eq!(c.model.device, Device::Cpu);
    assert!(c.demo.is_some());
    assert_eq!(c.training.prompts_per_step(), 8);
}

/// `model.dtype: bf16` (the original's setting) loads, and the run is told it computes in f32.
#[test]
fn a_dtype_other_than_f32_is_accepted_and_warned_about() {
    let cfg = |d: &str| {
        Config::from_yaml_str(
            &format!("model: {{path: m, dtype: {d}}}\ndata: {{train: t.json}}\n"),
            &[],
        )
        .unwrap()
    };
    assert_eq!(cfg("f32").model.dtype_warning(), None);
    let w = cfg("bf16").model.dtype_warning().unwrap();
    assert!(w.contains("Bf16") && w.contains("f32"), "{w}");
}

/// A megabyte-long value in a config (or an override) is not echoed whole in the error, and
/// a value of the wrong type is reported as such, naming its key.
#[test]
fn long_and_mistyped_values_give_short_errors_naming_the_key() {
    let huge = "x".repeat(1 << 20);
    let base = "model: {path: m}\ndata: {train: t.json}\n";
    for o in [
        format!("model.device={huge}"),
        format!("lora.lora_alpha={huge}"),
        format!("{huge}=1"),
        huge.clone(),
    ] {
        let e = err(base, &[o.as_str()]);
        assert!(e.len() < 2000, "{} bytes: {}", e.len(), &e[..200]);
    }
    let e = err(base, &["lora.lora_alpha=eight"]);
    assert!(
        e.contains("lora.lora_alpha") && e.contains("invalid type: string"),
        "{e}"
    );
}

#[test]
fn allowed_roots_must_name_folders() {
    let base = "model: {path: m}\ndata: {train: t.json, allowed_roots: []}\n";
    assert!(err(base, &[]).contains("data.allowed_roots"));
    let ok = "model: {path: m}\ndata: {train: t.json, allowed_roots: [/data/a, /mnt/b]}\n";
    let c = Config::from_yaml_str(ok, &[]).unwrap();
    assert_eq!(c.data.allowed_roots.unwrap(), ["/data/a", "/mnt/b"]);
}

use super::*;
use serde_json::Value;

fn fixture() -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loss/optim.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn lr_matches_transformers_get_scheduler() {
    let fx = fixture();
    let mut checked = 0;
    for s in fx["schedules"].as_array().unwrap() {
        let kind = match s["scheduler"].as_str().unwrap() {
            "linear" => SchedulerType::Linear,
            "cosine" => SchedulerType::Cosine,
            "constant_with_warmup" => SchedulerType::Constant,
            // transformers' `constant` ignores warmup: ours matches it only without warmup
            "constant" if s["warmup_steps"].as_u64() == Some(0) => SchedulerType::Constant,
            _ => continue,
        };
        let cfg = TrainingConfig {
            learning_rate: s["peak_lr"].as_f64().unwrap(),
            lr_scheduler_type: kind,
            warmup_steps: s["warmup_steps"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let total = s["total_steps"].as_u64().unwrap() as usize;
        for (k, want) in s["lr"].as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap();
            let got = lr_at(k, total, &cfg);
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1e-12),
                "{s}: step {k}: {got} vs {want}"
            );
            checked += 1;
        }
    }
    assert!(checked > 100);
}

#[test]
fn warmup_ratio_rounds_up_like_transformers() {
    for r in fixture()["warmup_ratio"].as_array().unwrap() {
        let cfg = TrainingConfig {
            warmup_ratio: r["warmup_ratio"].as_f64().unwrap(),
            ..Default::default()
        };
        let total = r["total_steps"].as_u64().unwrap() as usize;
        assert_eq!(
            warmup_steps(total, &cfg) as u64,
            r["warmup_steps"].as_u64().unwrap(),
            "{r}"
        );
    }
    let cfg = TrainingConfig {
        warmup_steps: 4,
        warmup_ratio: 0.5,
        ..Default::default()
    };
    assert_eq!(warmup_steps(100, &cfg), 4);
}

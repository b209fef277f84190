use serde::Deserialize;

use super::*;
use crate::config::ScaleRewards;
use crate::grpo::advantage::advantages;

#[derive(Deserialize)]
struct Case {
    name: String,
    num_generations: usize,
    scale_rewards: ScaleRewards,
    weights: [f64; 5],
    components: Vec<[f64; 5]>,
    metrics_f64: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[test]
fn matches_trl_metrics() {
    let text = include_str!("../../../tests/fixtures/advantage/trl_metrics.json");
    let f: Fixture = serde_json::from_str(text).unwrap();
    assert!(!f.cases.is_empty());
    for c in &f.cases {
        let bs: Vec<RewardBreakdown> = c
            .components
            .iter()
            .map(|x| RewardBreakdown {
                correct: x[0],
                explanation: x[1],
                evidence: x[2],
                format: x[3],
                conciseness: x[4],
                total: x.iter().zip(c.weights).map(|(x, w)| x * w).sum(),
                letter: None,
            })
            .collect();
        let totals: Vec<f64> = bs.iter().map(|b| b.total).collect();
        let a = advantages(&totals, c.num_generations, c.scale_rewards).unwrap();
        let got = reward_metrics(&bs, &a);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            c.metrics_f64.keys().collect::<Vec<_>>(),
            "{}",
            c.name
        );
        for (k, want) in &c.metrics_f64 {
            assert!(
                (got[k] - want).abs() < 1e-9,
                "{} {k}: {} vs TRL {want}",
                c.name,
                got[k]
            );
        }
    }
}

#[test]
fn single_completion_std_is_nan_like_trl() {
    let b = RewardBreakdown {
        correct: 1.0,
        explanation: 0.5,
        evidence: 0.0,
        format: 1.0,
        conciseness: 1.0,
        total: 1.5,
        letter: Some('A'),
    };
    let a = advantages(&[1.5], 1, ScaleRewards::Group).unwrap();
    let m = reward_metrics(&[b], &a);
    assert_eq!(m["reward"], 1.5);
    assert!(m["reward_std"].is_nan());
    assert_eq!(m["frac_reward_zero_std"], 1.0);
}

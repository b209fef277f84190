//! Advantages against TRL's own expressions (fixtures from scripts/trl_advantage_fixtures.py).

use serde::Deserialize;

use super::*;

#[derive(Deserialize)]
struct Case {
    name: String,
    num_generations: usize,
    scale_rewards: ScaleRewards,
    rewards: Vec<f64>,
    advantages_f64: Vec<f64>,
    advantages_f32: Vec<f64>,
    std_rewards_f64: Vec<f64>,
    is_std_zero_f64: Vec<bool>,
    frac_reward_zero_std_f64: f64,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn fixture() -> Fixture {
    let text = include_str!("../../../tests/fixtures/advantage/trl_advantages.json");
    serde_json::from_str(text).expect("fixture parses")
}

#[test]
fn matches_trl_float64() {
    let f = fixture();
    assert!(f.cases.len() >= 30);
    for c in &f.cases {
        let a = advantages(&c.rewards, c.num_generations, c.scale_rewards).unwrap();
        let what = format!("{} ({:?})", c.name, c.scale_rewards);
        assert_eq!(a.values.len(), c.advantages_f64.len(), "{what}");
        for (i, (got, want)) in a.values.iter().zip(&c.advantages_f64).enumerate() {
            assert!(
                (got - want).abs() < 1e-6,
                "{what} [{i}]: {got} vs TRL {want}"
            );
        }
        let g = c.num_generations;
        for (i, want) in c.std_rewards_f64.iter().enumerate() {
            let got = a.divisor_std[i / g];
            assert!(
                (got - want).abs() < 1e-9,
                "{what} std [{i}]: {got} vs {want}"
            );
            assert_eq!(
                got.abs() <= ZERO_STD_ATOL,
                c.is_std_zero_f64[i],
                "{what} [{i}]"
            );
        }
        assert!(
            (a.frac_reward_zero_std - c.frac_reward_zero_std_f64).abs() < 1e-7,
            "{what}: frac {} vs {}",
            a.frac_reward_zero_std,
            c.frac_reward_zero_std_f64
        );
    }
}

/// TRL runs in float32; away from flat groups we agree with it to float32 precision.
#[test]
fn close_to_trl_float32_except_flat_groups() {
    for c in &fixture().cases {
        let a = advantages(&c.rewards, c.num_generations, c.scale_rewards).unwrap();
        for (k, flat) in a.group_all_equal.iter().enumerate() {
            let g = c.num_generations;
            for i in k * g..(k + 1) * g {
                let (got, trl) = (a.values[i], c.advantages_f32[i]);
                if *flat {
                    assert_eq!(got, 0.0);
                    // float32 rounding of the mean is all TRL has here (divided by 1e-4).
                    assert!(trl.abs() < 2e-4, "{}: {trl}", c.name);
                } else if a.divisor_std[k] > 1e-6 {
                    assert!(
                        (got - trl).abs() < 2e-6 * (1.0 + got.abs()),
                        "{} ({:?}) [{i}]: {got} vs TRL f32 {trl}",
                        c.name,
                        c.scale_rewards
                    );
                }
            }
        }
    }
}

#[test]
fn flat_groups_are_flagged_and_exactly_zero() {
    let r = [0.2; 8]
        .into_iter()
        .chain([0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 2.0]);
    let r: Vec<f64> = r.collect();
    let a = advantages(&r, 8, ScaleRewards::Group).unwrap();
    assert_eq!(a.group_all_equal, [true, false]);
    assert!(a.values[..8].iter().all(|&v| v == 0.0));
    assert!(a.values[8..].iter().any(|&v| v != 0.0));
    assert_eq!(a.frac_reward_zero_std, 0.5);
    // Nearly equal is not equal: not flagged for skipping, though TRL's zero-std metric
    // counts it.
    let a = advantages(&[1.0, 1.0 + 1e-9, 1.0, 1.0], 4, ScaleRewards::Group).unwrap();
    assert_eq!(a.group_all_equal, [false]);
    assert_eq!(a.frac_reward_zero_std, 1.0);
    assert!(a.values[1] > 0.0);
}

#[test]
fn bad_shapes_and_values_are_errors() {
    assert!(advantages(&[1.0, 2.0, 3.0], 2, ScaleRewards::Group).is_err());
    assert!(advantages(&[], 2, ScaleRewards::Group).is_err());
    assert!(advantages(&[1.0, 2.0], 0, ScaleRewards::Group).is_err());
    assert!(advantages(&[1.0, f64::NAN], 2, ScaleRewards::Group).is_err());
}

/// Reward and advantage stages in the runtime: steps are whole, in order, and carry the
/// same advantages as calling the functions directly, whatever the scorer's worker count.
#[test]
fn stages_in_the_runtime() {
    use std::sync::Arc;

    use crate::config::RewardsConfig;
    use crate::grpo::messages::CompletionGroup;
    use crate::grpo::reward::stage::RewardStage;
    use crate::grpo::reward::{Reference, score};
    use crate::stages::{Pipeline, PipelineOptions, StageOptions};
    use stage::AdvantageStage;

    let reference =
        Arc::new(Reference::new('B', "right pleural effusion", "Right effusion.", "").unwrap());
    let group = |q: u64| -> Vec<String> {
        (0..4)
            .map(|i| {
                let letter = if (q + i).is_multiple_of(3) { 'B' } else { 'C' };
                format!("<start_working_out>right effusion {q}<end_working_out><SOLUTION>{letter}</SOLUTION>")
            })
            .collect()
    };
    // 7 prompts, 2 per step: 3 steps, the 7th group is left over.
    let items: Vec<anyhow::Result<CompletionGroup<u64>>> = (0..7u64)
        .map(|q| {
            Ok(CompletionGroup {
                question_id: format!("q{q}"),
                reference: reference.clone(),
                completions: group(q),
                payload: q,
            })
        })
        .collect();
    let mut p = Pipeline::new(PipelineOptions::quiet());
    let src = p.source("groups", 4, items);
    let scored = p.stage("reward", StageOptions::new(3, 4), src, |_| {
        RewardStage::new(RewardsConfig::default(), 4)
    });
    let steps = p.stage(
        "advantage",
        StageOptions::new(1, 2).ordered(),
        scored,
        |_| AdvantageStage::new(2, 4, ScaleRewards::Batch),
    );
    let (out, _report) = p.run_collect("learner", steps).unwrap();
    assert_eq!(out.len(), 3);
    let cfg = RewardsConfig::default();
    for (k, s) in out.iter().enumerate() {
        assert_eq!(s.step, k as u64);
        let qs: Vec<u64> = s.groups.iter().map(|g| g.group.payload).collect();
        assert_eq!(qs, [2 * k as u64, 2 * k as u64 + 1]);
        let totals: Vec<f64> = qs
            .iter()
            .flat_map(|&q| {
                group(q)
                    .into_iter()
                    .map(|c| score(&c, &reference, &cfg).total)
            })
            .collect();
        let want = advantages(&totals, 4, ScaleRewards::Batch).unwrap();
        assert_eq!(s.advantages, want);
        assert_eq!(s.metrics["reward"], totals.iter().sum::<f64>() / 8.0);
    }
}

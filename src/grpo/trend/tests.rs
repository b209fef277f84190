use super::*;

fn log(step: u64, correct: f64) -> StepLog {
    StepLog {
        step,
        cursor: Default::default(),
        metrics: [
            ("rewards/correct/mean".to_string(), correct),
            ("reward".to_string(), correct + 0.1),
        ]
        .into_iter()
        .collect(),
        applied: true,
    }
}

#[test]
fn compares_the_first_and_last_fifth() {
    // 10 steps: window of 2; first two 0 and 0.5, last two 1 and 0.5.
    let v = [0.0, 0.5, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 1.0, 0.5];
    let logs: Vec<StepLog> = v
        .iter()
        .enumerate()
        .map(|(i, &c)| log(i as u64 + 1, c))
        .collect();
    let rows = trend(&logs);
    assert_eq!(
        rows.len(),
        2,
        "format is not logged here, so it is left out"
    );
    assert_eq!(rows[0].label, "accuracy");
    assert!((rows[0].first - 0.25).abs() < 1e-12);
    assert!((rows[0].last - 0.75).abs() < 1e-12);
    assert!((rows[1].last - 0.85).abs() < 1e-12);
    let table = render(&rows, logs.len());
    assert!(table.contains("steps 1-2"), "{table}");
    assert!(table.contains("steps 9-10"), "{table}");
    assert!(table.contains("+50.0 pts"), "{table}");
}

#[test]
fn too_few_steps_give_no_trend() {
    let logs: Vec<StepLog> = (1..5).map(|i| log(i, 0.5)).collect();
    assert!(trend(&logs).is_empty());
}

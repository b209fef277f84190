//! `medgrpo reward` on in-memory files: scores, skipped lines with their numbers, summary.

use super::*;

const DATA: &str = r#"{
  "q1": {"question": "Which?", "options": ["A. x", "B. y"], "correct_answer": "B",
         "correct_answer_explanation": "Right pleural effusion.",
         "Findings": "Right pleural effusion.", "Impression": "Effusion.", "ImagePath": ["a.png"]},
  "q2": {"question": "Which?", "options": ["A. x", "B. y"], "correct_answer": "A",
         "correct_answer_explanation": "Normal heart.", "Findings": null},
  "7": {"correct_answer": "c", "correct_answer_explanation": "Edema."},
  "bad": {"correct_answer": "AB", "correct_answer_explanation": ""}
}"#;

fn run_on(input: &str) -> (Summary, Vec<serde_json::Value>, Vec<(usize, String)>) {
    let mut answers = Answers::from_json(DATA).unwrap();
    let mut out = Vec::new();
    let mut reported = Vec::new();
    let s = score_jsonl(
        &mut answers,
        input.as_bytes(),
        &mut out,
        &RewardsConfig::default(),
        |l, w| reported.push((l, w.to_owned())),
    )
    .unwrap();
    let lines = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (s, lines, reported)
}

#[test]
fn scores_reports_and_summarizes() {
    let input = concat!(
        r#"{"id": "q1", "completion": "<start_working_out>Right pleural effusion.<end_working_out><SOLUTION>B</SOLUTION>"}"#,
        "\n",
        r#"{"id": "nope", "completion": "x"}"#,
        "\n",
        "not json\n",
        "\n",
        r#"{"id": "q2", "completion": "B"}"#,
        "\n",
        r#"{"id": 7, "completion": "<SOLUTION>C</SOLUTION>", "extra": 1}"#,
        "\n",
        r#"{"id": "bad", "completion": "A"}"#,
        "\n",
        r#"{"completion": "no id"}"#,
    );
    let (s, lines, reported) = run_on(input);
    assert_eq!(s.scored, 3);
    let skipped: Vec<usize> = s.skipped.iter().map(|x| x.0).collect();
    assert_eq!(skipped, [2, 3, 7, 8]);
    assert_eq!(reported, s.skipped);
    assert!(
        s.skipped[0].1.contains("unknown question id \"nope\""),
        "{:?}",
        s.skipped
    );
    assert!(s.skipped[1].1.contains("malformed"));
    assert!(s.skipped[2].1.contains("not a single letter"));
    assert!(s.skipped[3].1.contains("malformed"));

    // Line 1: well-formed, correct; reasoning "right pleural effusion" = explanation (F1 1);
    // terms right pleural effusion (3 -> 1). Total 1 + 0.6 + 0.2 + 0.1 + 0.1 = 2.0.
    assert_eq!(lines[0]["line"], 1);
    assert_eq!(lines[0]["id"], "q1");
    assert_eq!(lines[0]["letter"], "B");
    assert_eq!(lines[0]["correct_answer"], "B");
    for (k, v) in [
        ("correct", 1.0),
        ("explanation", 1.0),
        ("evidence", 1.0),
        ("format", 1.0),
        ("conciseness", 1.0),
        ("total", 2.0),
    ] {
        assert!((lines[0][k].as_f64().unwrap() - v).abs() < 1e-12, "{k}");
    }
    // Line 5: "B" with no tags for an A question: only conciseness. Total 0.1.
    assert_eq!(lines[1]["line"], 5);
    assert_eq!(lines[1]["letter"], serde_json::Value::Null);
    assert!((lines[1]["total"].as_f64().unwrap() - 0.1).abs() < 1e-12);
    // Line 6: numeric id 7, lower-case answer key "c", SOLUTION C: correct; not well-formed;
    // reasoning " " shares nothing with "edema". Total 1 + 0.1.
    assert_eq!(lines[2]["id"], "7");
    assert_eq!(lines[2]["letter"], "C");
    assert!((lines[2]["total"].as_f64().unwrap() - 1.1).abs() < 1e-12);

    assert!((s.accuracy() - 2.0 / 3.0).abs() < 1e-12);
    assert!((s.format_rate() - 1.0 / 3.0).abs() < 1e-12);
    assert!((s.total_mean() - 3.2 / 3.0).abs() < 1e-12);
    assert!(
        s.render()
            .contains("scored 3 completion(s), skipped 4 line(s)")
    );
}

#[test]
fn invalid_utf8_line_is_skipped_not_fatal() {
    let mut input = b"\xff\xfe\n".to_vec();
    input.extend_from_slice(br#"{"id": "q2", "completion": "A"}"#);
    let mut answers = Answers::from_json(DATA).unwrap();
    let mut out = Vec::new();
    let s = score_jsonl(
        &mut answers,
        &input[..],
        &mut out,
        &RewardsConfig::default(),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(s.scored, 1);
    assert_eq!(s.skipped.len(), 1);
    assert!(s.skipped[0].1.contains("UTF-8"));
}

#[test]
fn dataset_errors_name_the_record() {
    let e = Answers::from_json(r#"{"q1": {"correct_answer": "A", "Findings": 3}}"#)
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("q1"), "{e:#}");
    assert!(Answers::from_json("[1, 2]").is_err());
}

/// A question id given twice in the dataset is an error naming it (the JSON object would
/// otherwise keep the last copy silently).
#[test]
fn duplicate_question_ids_are_an_error() {
    let e = Answers::from_json(
        r#"{"q1": {"correct_answer": "A"}, "q2": {"correct_answer": "B"}, "q1": {"correct_answer": "C"}}"#,
    )
    .err()
    .expect("duplicate accepted");
    let e = format!("{e:#}");
    assert!(e.contains("q1") && e.contains("duplicate"), "{e}");
}

/// A run in which every line is skipped scored nothing: a non-zero exit, not a summary of
/// zero completions.
#[test]
fn a_run_that_scores_nothing_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.json");
    let completions = dir.path().join("c.jsonl");
    std::fs::write(&data, DATA).unwrap();
    std::fs::write(
        &completions,
        "{\"id\": \"nope\", \"completion\": \"A\"}\nnot json\n",
    )
    .unwrap();
    let args = |allow_empty| RewardArgs {
        data: data.clone(),
        completions: completions.clone(),
        config: None,
        out: Some(dir.path().join("out.jsonl")),
        allow_empty,
    };
    let e = format!("{:#}", run(args(false)).unwrap_err());
    assert!(
        e.contains("no completion could be scored") && e.contains("2 line(s) skipped"),
        "{e}"
    );
    run(args(true)).unwrap();
}

use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

fn good() -> Value {
    json!({
        "question": "What is shown?",
        "options": ["A. Effusion", "B. Normal", "C. Mass", "D. Edema"],
        "correct_answer": "B",
        "correct_answer_explanation": "Clear lungs.",
        "ImagePath": ["../deid_png/p1/s1/a.png"],
        "ImageViewPosition": ["PA"],
        "Indication": "cough",
        "Findings": null,
        "Impression": "normal",
        "task_name": "diagnosis",
        "category": "presence"
    })
}

fn resolver() -> PathResolver {
    PathResolver::new(
        Some(Path::new("/data/rexvqa/metadata")),
        Path::new("x.json"),
    )
}

#[test]
fn parses_a_rexvqa_record_and_keeps_unknown_fields() {
    let r = parse_record("q1", good(), &resolver()).unwrap();
    assert_eq!(r.id, "q1");
    assert_eq!(r.correct_answer, "B");
    assert_eq!(r.correct_index(), 1);
    assert_eq!(r.options.len(), 4);
    assert_eq!(
        r.image_paths,
        vec![PathBuf::from("/data/rexvqa/deid_png/p1/s1/a.png")]
    );
    assert_eq!(r.image_keys, vec!["deid_png/p1/s1/a.png"]);
    assert_eq!(r.view_positions, vec!["PA"]);
    assert_eq!(r.findings, None);
    assert_eq!(r.impression.as_deref(), Some("normal"));
    let keys: Vec<&String> = r.extra.keys().collect();
    assert_eq!(keys, ["task_name", "category"]);
}

/// A record without `ImagePath` (absent or null) is a text-only question, not an error.
#[test]
fn a_record_without_image_path_is_text_only() {
    for drop in [true, false] {
        let mut v = good();
        let o = v.as_object_mut().unwrap();
        o.shift_remove("ImageViewPosition");
        if drop {
            o.shift_remove("ImagePath");
        } else {
            o.insert("ImagePath".into(), Value::Null);
        }
        let r = parse_record("t1", v, &resolver()).unwrap();
        assert!(r.is_text_only());
        assert!(r.image_paths.is_empty() && r.image_keys.is_empty());
        assert_eq!(r.question, "What is shown?");
    }
    assert!(
        !parse_record("q1", good(), &resolver())
            .unwrap()
            .is_text_only()
    );
}

#[test]
fn accepts_stringified_python_lists() {
    let mut v = good();
    v["options"] = json!("['A. yes', 'B. no']");
    v["ImagePath"] = json!("['../deid_png/a.png', '../deid_png/b.png']");
    v["ImageViewPosition"] = json!("['PA', 'LATERAL']");
    v["correct_answer"] = json!("a");
    let r = parse_record("q2", v, &resolver()).unwrap();
    assert_eq!(r.options, vec!["A. yes", "B. no"]);
    assert_eq!(r.image_keys, vec!["deid_png/a.png", "deid_png/b.png"]);
    assert_eq!(r.correct_answer, "A");
}

/// Every documented validation error, each naming the question id and the field.
#[test]
fn bad_records_give_the_documented_errors() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!([1, 2]), "<record>", "is a list, expected an object"),
        (
            {
                let mut v = good();
                v.as_object_mut().unwrap().shift_remove("question");
                v
            },
            "question",
            "is missing",
        ),
        (
            {
                let mut v = good();
                v["question"] = json!("  ");
                v
            },
            "question",
            "is empty",
        ),
        (
            {
                let mut v = good();
                v["question"] = json!(3);
                v
            },
            "question",
            "is a number, expected a string",
        ),
        (
            {
                let mut v = good();
                v["options"] = json!(["A. only"]);
                v
            },
            "options",
            "has 1 item(s), a question needs at least 2",
        ),
        (
            {
                let mut v = good();
                v["options"] = json!(["A. x", 2]);
                v
            },
            "options",
            "item 1 is a number, expected a string",
        ),
        (
            {
                let mut v = good();
                v["options"] = json!("['A. x', 'B. y'");
                v
            },
            "options",
            "unterminated list literal",
        ),
        (
            {
                let mut v = good();
                v["options"] = json!({"a": 1});
                v
            },
            "options",
            "is an object, expected a list of strings",
        ),
        (
            {
                let mut v = good();
                v["correct_answer"] = json!("Effusion");
                v
            },
            "correct_answer",
            "is not an option letter",
        ),
        (
            {
                let mut v = good();
                v["correct_answer"] = json!("F");
                v
            },
            "correct_answer",
            "is F but there are only 4 options",
        ),
        (
            {
                let mut v = good();
                v["correct_answer"] = json!(1);
                v
            },
            "correct_answer",
            "is a number, expected a letter",
        ),
        (
            {
                let mut v = good();
                v.as_object_mut().unwrap().shift_remove("correct_answer");
                v
            },
            "correct_answer",
            "is missing",
        ),
        (
            {
                let mut v = good();
                v["ImagePath"] = json!(7);
                v
            },
            "ImagePath",
            "is a number, expected a list of strings",
        ),
        (
            {
                let mut v = good();
                v.as_object_mut().unwrap().shift_remove("ImagePath");
                v
            },
            "ImageViewPosition",
            "has 1 item(s) but ImagePath has 0",
        ),
        (
            {
                let mut v = good();
                v["ImagePath"] = json!([]);
                v
            },
            "ImagePath",
            "is an empty list",
        ),
        (
            {
                let mut v = good();
                v["ImagePath"] = json!([""]);
                v
            },
            "ImagePath",
            "item 0 is an empty path",
        ),
        (
            {
                let mut v = good();
                v["ImageViewPosition"] = json!(["PA", "AP"]);
                v
            },
            "ImageViewPosition",
            "has 2 item(s) but ImagePath has 1",
        ),
        (
            {
                let mut v = good();
                v["Indication"] = json!(["x"]);
                v
            },
            "Indication",
            "is a list, expected a string",
        ),
        (
            {
                let mut v = good();
                v["correct_answer_explanation"] = json!(false);
                v
            },
            "correct_answer_explanation",
            "is a boolean, expected a string",
        ),
    ];
    for (v, field, reason) in cases {
        let e = parse_record("q9", v, &resolver()).unwrap_err();
        assert_eq!(e.id, "q9");
        assert_eq!(e.field, field, "{e}");
        assert!(e.reason.contains(reason), "{e} should contain {reason:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("question q9: field `{field}`"))
        );
    }
}

#[test]
fn streams_a_split_with_skip_and_abort() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("split.json");
    let mut bad = good();
    bad["correct_answer"] = json!("Z");
    let text = serde_json::to_string(&json!({"q1": good(), "q2": bad, "q3": good()})).unwrap();
    std::fs::write(&path, text).unwrap();

    let s = load_split(&path, None, OnBadItem::Skip).unwrap();
    assert_eq!(
        s.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["q1", "q3"]
    );
    assert_eq!(s.rejected.len(), 1);
    assert_eq!(s.rejected[0].id, "q2");
    // Without image_root, relative paths resolve against the JSON's directory.
    assert_eq!(
        s.records[0].image_paths[0],
        dir.path().parent().unwrap().join("deid_png/p1/s1/a.png")
    );

    let e = load_split(&path, None, OnBadItem::Abort).unwrap_err();
    assert!(
        format!("{e:#}").contains("question q2: field `correct_answer`"),
        "{e:#}"
    );

    let streamed: Vec<_> = stream_records(&path, None, 1).collect();
    assert_eq!(streamed.len(), 3);
    assert!(streamed[1].as_ref().unwrap().is_err());

    let rejects = dir.path().join("rejects.jsonl");
    write_rejects(&rejects, &s.rejected).unwrap();
    let line = std::fs::read_to_string(&rejects).unwrap();
    assert!(line.contains("\"id\":\"q2\"") && line.contains("\"field\":\"correct_answer\""));
}

#[test]
fn syntax_errors_and_wrong_top_level_are_fatal_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, "{\"q1\": {\"question\": \"x\",,}}").unwrap();
    let e = load_split(&path, None, OnBadItem::Skip).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("broken.json is not valid JSON") && msg.contains("line 1"),
        "{msg}"
    );

    std::fs::write(&path, "[1, 2]").unwrap();
    let e = load_split(&path, None, OnBadItem::Skip).unwrap_err();
    assert!(
        format!("{e:#}").contains("one JSON object keyed by question id"),
        "{e:#}"
    );

    let e = load_split(&dir.path().join("missing.json"), None, OnBadItem::Skip).unwrap_err();
    assert!(format!("{e:#}").contains("cannot open dataset"), "{e:#}");
}

#[test]
fn image_keys_are_normalised() {
    assert_eq!(image_key("../deid_png/p/x.png"), "deid_png/p/x.png");
    assert_eq!(image_key("./a/./b/../c.png"), "a/c.png");
    assert_eq!(image_key("/abs/x.dcm"), "abs/x.dcm");
}

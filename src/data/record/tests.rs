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
    ImagePaths::new(
        Some(Path::new("/data/rexvqa/metadata")),
        None,
        &[Path::new("x.json")],
    )
    .resolver(Path::new("x.json"))
}

/// A `data:` section reading `path` (image_root `root`) with the given bad-record policy.
fn data(path: &Path, root: Option<&Path>, on_bad_item: OnBadItem) -> DataConfig {
    DataConfig {
        train: path.display().to_string(),
        val: None,
        test: None,
        image_root: root.map(|r| r.display().to_string()),
        allowed_roots: None,
        on_bad_item,
        cache_capacity: 512,
    }
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

    let s = load_split(&path, &data(&path, None, OnBadItem::Skip)).unwrap();
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

    let e = load_split(&path, &data(&path, None, OnBadItem::Abort)).unwrap_err();
    assert!(
        format!("{e:#}").contains("question q2: field `correct_answer`"),
        "{e:#}"
    );

    let streamed: Vec<_> = stream_records(&path, &data(&path, None, OnBadItem::Skip), 1).collect();
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
    let e = load_split(&path, &data(&path, None, OnBadItem::Skip)).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("broken.json is not valid JSON") && msg.contains("line 1"),
        "{msg}"
    );

    std::fs::write(&path, "[1, 2]").unwrap();
    let e = load_split(&path, &data(&path, None, OnBadItem::Skip)).unwrap_err();
    assert!(
        format!("{e:#}").contains("one JSON object keyed by question id"),
        "{e:#}"
    );

    let missing = dir.path().join("missing.json");
    let e = load_split(&missing, &data(&missing, None, OnBadItem::Skip)).unwrap_err();
    assert!(format!("{e:#}").contains("cannot open dataset"), "{e:#}");
}

/// Writes `text` as `meta/train.json` under a temp dir (image_root `meta`), returns both.
fn split_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("meta")).unwrap();
    let path = dir.path().join("meta/train.json");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn with_image(path: &str) -> Value {
    let mut v = good();
    v["ImagePath"] = json!([path]);
    v
}

/// `sub/a.png` and `../sub/a.png` relative to image_root are two files: two keys.
#[test]
fn two_files_never_share_a_key() {
    let text = json!({"q1": with_image("sub/a.png"), "q2": with_image("../sub/a.png")});
    let (dir, path) = split_file(&text.to_string());
    let root = dir.path().join("meta");
    let s = load_split(&path, &data(&path, Some(&root), OnBadItem::Abort)).unwrap();
    let (a, b) = (&s.records[0], &s.records[1]);
    assert_ne!(a.image_paths, b.image_paths);
    assert_ne!(a.image_keys, b.image_keys, "{:?}", a.image_keys);
}

/// Paths that leave the data folders are rejected with the record named; ReXVQA's
/// `../deid_png/…` stays fine.
#[test]
fn image_paths_outside_the_data_folders_are_rejected() {
    let text = json!({
        "q1": with_image("../../../../etc/passwd"),
        "q2": with_image("/etc/passwd"),
        "q3": with_image("../deid_png/p1/a.png"),
    });
    let (dir, path) = split_file(&text.to_string());
    let root = dir.path().join("meta");
    let s = load_split(&path, &data(&path, Some(&root), OnBadItem::Skip)).unwrap();
    assert_eq!(s.records.len(), 1);
    assert_eq!(s.records[0].id, "q3");
    let ids: Vec<&str> = s.rejected.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["q1", "q2"]);
    for e in &s.rejected {
        assert_eq!(e.field, "ImagePath");
        assert!(
            e.reason.contains("/etc/passwd") && e.reason.contains("outside"),
            "{e}"
        );
    }
}

/// A question id given twice (duplicate JSON keys) is an error, not a silent overwrite.
#[test]
fn duplicate_question_ids_are_rejected() {
    let one = good().to_string();
    let (dir, path) = split_file(&format!("{{\"q1\": {one}, \"q2\": {one}, \"q1\": {one}}}"));
    let root = dir.path().join("meta");
    let s = load_split(&path, &data(&path, Some(&root), OnBadItem::Skip)).unwrap();
    assert_eq!(s.records.len(), 2);
    assert_eq!(s.rejected.len(), 1);
    assert_eq!(s.rejected[0].id, "q1");
    assert!(
        s.rejected[0].reason.contains("duplicate"),
        "{}",
        s.rejected[0]
    );
    let e = load_split(&path, &data(&path, Some(&root), OnBadItem::Abort)).unwrap_err();
    assert!(format!("{e:#}").contains("duplicate question id"), "{e:#}");
}

/// A 10 MB value is not echoed whole in an error, whatever field holds it.
#[test]
fn long_values_are_clipped_in_errors() {
    let huge = "x".repeat(10 << 20);
    let mut a = good();
    a["correct_answer"] = json!(huge);
    let mut b = good();
    b["options"] = json!(format!("['{huge}'"));
    for (id, v) in [("q1", a), ("q2", b)] {
        let e = parse_record(id, v, &resolver()).unwrap_err().to_string();
        assert!(e.len() < 2000, "{id}: {} bytes", e.len());
    }
    let e = parse_record(&huge, json!(1), &resolver())
        .unwrap_err()
        .to_string();
    assert!(e.len() < 2000, "id: {} bytes", e.len());
}

mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::*;

    const FIELDS: [&str; 10] = [
        "question",
        "options",
        "correct_answer",
        "correct_answer_explanation",
        "ImagePath",
        "ImageViewPosition",
        "Indication",
        "Findings",
        "Impression",
        "task_name",
    ];

    /// A field value of any JSON type, often one a real record holds (paths that leave the
    /// data folder included).
    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-2i64..5).prop_map(Value::from),
            prop_oneof![
                Just("B"),
                Just("c)"),
                Just("Z"),
                Just(""),
                Just("['A. x', 'B. y']"),
                Just("['a'"),
                Just("../deid_png/a.png"),
                Just("../../../../etc/passwd"),
                Just("/etc/passwd"),
                Just(".."),
            ]
            .prop_map(Value::from),
            "\\PC{0,10}".prop_map(Value::from),
            vec(
                prop_oneof![
                    Just("A. x"),
                    Just("B. y"),
                    Just("PA"),
                    Just("../deid_png/b.png"),
                    Just("")
                ],
                0..4
            )
            .prop_map(|v| json!(v)),
            Just(json!([1, "x"])),
            Just(json!({"a": 1})),
        ]
    }

    /// A valid record with some fields replaced, removed or added.
    fn record() -> impl Strategy<Value = Value> {
        vec(
            (
                prop_oneof![
                    proptest::sample::select(FIELDS.to_vec()).prop_map(String::from),
                    "[A-Za-z]{1,6}"
                ],
                proptest::option::of(value()),
            ),
            0..5,
        )
        .prop_map(|edits| {
            let mut m: Map<String, Value> = good().as_object().unwrap().clone();
            for (k, v) in edits {
                match v {
                    Some(v) => m.insert(k, v),
                    None => m.shift_remove(&k),
                };
            }
            Value::Object(m)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any record: no panic; an accepted one is consistent (a valid answer index, images
        /// inside the data folder with keys); a refused one names its question and a field.
        #[test]
        fn records_never_panic_and_errors_name_the_question(
            id in "\\PC{0,12}",
            v in prop_oneof![4 => record(), 1 => value()],
        ) {
            match parse_record(&id, v, &resolver()) {
                Ok(r) => {
                    prop_assert_eq!(&r.id, &id);
                    prop_assert!(r.options.len() >= 2 && r.correct_index() < r.options.len());
                    prop_assert_eq!(r.image_paths.len(), r.image_keys.len());
                    for p in &r.image_paths {
                        prop_assert!(p.starts_with("/data/rexvqa"), "{}", p.display());
                    }
                }
                Err(e) => {
                    prop_assert_eq!(&e.id, &id);
                    prop_assert!(
                        FIELDS.contains(&e.field.as_str()) || e.field == "<record>",
                        "field {}", e.field
                    );
                    let shown = e.to_string();
                    let prefix = format!("question {}: field `{}`: ", crate::clip::clip(&id), e.field);
                    prop_assert!(shown.starts_with(&prefix), "{}", shown);
                }
            }
        }

        /// A split file cut short or with a byte changed: no panic, and a fatal error names
        /// the file (a bad record inside names its question).
        #[test]
        fn damaged_split_files_never_panic(
            cut in 0usize..400,
            at in 0usize..400,
            byte in any::<u8>(),
        ) {
            let text = json!({"q1": good(), "q2": good(), "q3": with_image("../x.png")}).to_string();
            let mut bytes = text.into_bytes();
            let at = at.min(bytes.len() - 1);
            bytes[at] = byte;
            bytes.truncate(bytes.len().saturating_sub(cut));
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("split.json");
            std::fs::write(&path, &bytes).unwrap();
            match load_split(&path, &data(&path, None, OnBadItem::Skip)) {
                Ok(s) => {
                    for e in &s.rejected {
                        let prefix = format!("question {}", e.id);
                        prop_assert!(e.to_string().starts_with(&prefix));
                    }
                }
                Err(e) => {
                    let shown = format!("{e:#}");
                    prop_assert!(shown.contains("split.json"), "{}", shown);
                }
            }
        }
    }
}

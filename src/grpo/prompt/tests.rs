//! Prompt builder tests: the exact prompt text for a record (written by hand from DESIGN.md and
//! Gemma 3's template) and its ids against transformers, option normalization, rejection
//! reasons, the length policy, and the stage inside the runtime.

use std::sync::{Arc, Mutex, OnceLock};

use super::*;
use crate::config::DEFAULT_SYSTEM_PROMPT;
use crate::model::tokenizer::tests::{reference, tiny_dir};
use crate::stages::{Pipeline, PipelineOptions, StageOptions};

fn processor() -> Arc<Gemma3Processor> {
    static P: OnceLock<Arc<Gemma3Processor>> = OnceLock::new();
    P.get_or_init(|| Arc::new(Gemma3Processor::from_dir(tiny_dir()).unwrap()))
        .clone()
}

fn builder(config: PromptConfig) -> PromptBuilder {
    PromptBuilder::new(processor(), config)
}

fn record() -> PromptInput {
    PromptInput {
        id: "q1".into(),
        question: " Which finding is present in the right lower lobe? ".into(),
        options: vec![
            "A. Consolidation".into(),
            "B. Pneumothorax".into(),
            "C. Normal lung".into(),
            "D. Mass".into(),
        ],
        correct_answer: "A".into(),
        indication: Some("Shortness of breath and fever.".into()),
        has_image: true,
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn rejection(r: Result<BuiltPrompt>) -> Rejection {
    r.unwrap_err().downcast_ref::<Rejection>().unwrap().clone()
}

#[test]
fn default_prompt_text_by_hand_and_ids_like_transformers() {
    let p = builder(PromptConfig::default()).build(&record()).unwrap();
    let want = format!(
        "<bos><start_of_turn>user\n{DEFAULT_SYSTEM_PROMPT}\n\n<start_of_image>\
         Clinical context: Shortness of breath and fever.\n\n\
         Which finding is present in the right lower lobe?\n\
         A. Consolidation\nB. Pneumothorax\nC. Normal lung\nD. Mass\
         <end_of_turn>\n<start_of_turn>model\n"
    );
    assert_eq!(p.text, want);
    assert_eq!(p.correct_letter, 'A');
    assert_eq!(p.num_images, 1);
    assert!(!p.truncated);
    // transformers' processor on the same conversation.
    let r = reference();
    let c = r
        .conversations
        .iter()
        .find(|c| c.name == "builder_default")
        .unwrap();
    assert_eq!(p.text, c.text);
    assert_eq!(p.input_ids, c.input_ids);
    assert_eq!(Some(&p.token_type_ids), c.token_type_ids.as_ref());
}

#[test]
fn indication_switch_and_text_only() {
    let cfg = PromptConfig {
        include_indication: false,
        system: "Answer.".into(),
        ..Default::default()
    };
    let mut rec = record();
    rec.has_image = false;
    let p = builder(cfg).build(&rec).unwrap();
    assert_eq!(
        p.text,
        "<bos><start_of_turn>user\nAnswer.\n\nWhich finding is present in the right lower lobe?\n\
         A. Consolidation\nB. Pneumothorax\nC. Normal lung\nD. Mass<end_of_turn>\n\
         <start_of_turn>model\n"
    );
    assert_eq!(p.num_images, 0);
    assert!(p.token_type_ids.iter().all(|&t| t == 0));

    // A blank indication gives no context line; an empty system prompt gives no system part.
    let cfg = PromptConfig {
        system: "  ".into(),
        ..Default::default()
    };
    rec.indication = Some(" \n ".into());
    let p = builder(cfg).build(&rec).unwrap();
    assert!(
        p.text
            .starts_with("<bos><start_of_turn>user\nWhich finding")
    );
    assert!(!p.text.contains("Clinical context"));
}

#[test]
fn option_prefixes_are_normalized() {
    let opts = normalize_options(&strs(&["A. x", "b) y", "(C) z", "D: w", "E.", "F"])).unwrap_err();
    // "F" has no prefix while the others do.
    assert_eq!(opts.kind(), "mixed_option_letters");

    let o = normalize_options(&strs(&["A. Left", "b) Right", "(C) Both", "D: Neither"])).unwrap();
    let flat: Vec<(char, &str)> = o.iter().map(|o| (o.letter, o.text.as_str())).collect();
    assert_eq!(
        flat,
        [
            ('A', "Left"),
            ('B', "Right"),
            ('C', "Both"),
            ('D', "Neither")
        ]
    );

    // No prefixes: lettered by position; "A small effusion" and "I/O" are texts.
    let o = normalize_options(&strs(&[
        "A small effusion",
        "I/O line",
        " Normal \n study ",
    ]))
    .unwrap();
    let flat: Vec<(char, &str)> = o.iter().map(|o| (o.letter, o.text.as_str())).collect();
    assert_eq!(
        flat,
        [
            ('A', "A small effusion"),
            ('B', "I/O line"),
            ('C', "Normal study")
        ]
    );

    // Given letters are kept in the given order.
    let o = normalize_options(&strs(&["B. x", "A. y"])).unwrap();
    assert_eq!((o[0].letter, o[1].letter), ('B', 'A'));

    // Same prompt with or without prefixes.
    let mut rec = record();
    let with = builder(PromptConfig::default()).build(&rec).unwrap();
    rec.options = strs(&["Consolidation", "Pneumothorax", "Normal lung", "Mass"]);
    let without = builder(PromptConfig::default()).build(&rec).unwrap();
    assert_eq!(with.input_ids, without.input_ids);
}

#[test]
fn split_letter_cases() {
    assert_eq!(split_letter("A. text"), (Some('A'), "text"));
    assert_eq!(split_letter("  (d)  text "), (Some('D'), "text"));
    assert_eq!(split_letter("C)"), (Some('C'), ""));
    assert_eq!(split_letter("A.text"), (None, "A.text"));
    assert_eq!(split_letter("Ab. x"), (None, "Ab. x"));
    assert_eq!(split_letter("(A text"), (None, "(A text"));
    assert_eq!(split_letter("1. x"), (None, "1. x"));
    assert_eq!(split_letter(""), (None, ""));
}

#[test]
fn correct_answer_forms() {
    let o = normalize_options(&strs(&["A. Yes", "B. No", "C. Maybe"])).unwrap();
    for a in ["B", "b", " B. ", "(B)", "B) No", "B. No", "no", "No"] {
        assert_eq!(correct_letter(a, &o), Ok('B'), "{a:?}");
    }
    assert_eq!(
        correct_letter("D", &o).unwrap_err().to_string(),
        "correct answer D is not among the options A, B, C"
    );
    for a in ["", "AB", "A and B", "1"] {
        assert_eq!(
            correct_letter(a, &o).unwrap_err().kind(),
            "bad_correct_answer",
            "{a:?}"
        );
    }
}

#[test]
fn rejection_reasons() {
    let b = builder(PromptConfig::default());
    let mut r = record();
    r.correct_answer = "E".into();
    let e = b.build(&r).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("record q1")
            && msg.contains("correct answer E is not among the options A, B, C, D"),
        "{msg}"
    );

    let mut r = record();
    r.options.clear();
    assert_eq!(rejection(b.build(&r)), Rejection::NoOptions);

    let mut r = record();
    r.question = "  ".into();
    assert_eq!(rejection(b.build(&r)), Rejection::EmptyQuestion);

    let mut r = record();
    r.options = strs(&["A. x", "A. y"]);
    assert_eq!(rejection(b.build(&r)), Rejection::DuplicateLetter('A'));

    let mut r = record();
    r.options = strs(&["A. x", "B. "]);
    assert_eq!(rejection(b.build(&r)), Rejection::EmptyOption(2));

    let mut r = record();
    r.options = (0..27).map(|i| format!("opt {i}")).collect();
    assert_eq!(rejection(b.build(&r)), Rejection::TooManyOptions(27));
}

#[test]
fn too_long_is_rejected_under_reject() {
    let full = builder(PromptConfig::default())
        .build(&record())
        .unwrap()
        .len();
    let cfg = PromptConfig {
        max_prompt_length: full - 1,
        on_too_long: OnTooLong::Reject,
        ..Default::default()
    };
    let b = builder(cfg);
    let e = b.build(&record()).unwrap_err();
    assert_eq!(
        e.downcast_ref::<Rejection>().unwrap(),
        &Rejection::TooLong {
            tokens: full,
            max: full - 1,
            hint: " (on_too_long: reject)"
        }
    );
    // Exactly at the limit is fine.
    let cfg = PromptConfig {
        max_prompt_length: full,
        ..Default::default()
    };
    assert_eq!(builder(cfg).build(&record()).unwrap().len(), full);
}

#[test]
fn truncate_shortens_only_the_indication_from_the_left() {
    let mut rec = record();
    let words: Vec<String> = (0..40).map(|i| format!("word{i}")).collect();
    rec.indication = Some(words.join(" "));
    let long = builder(PromptConfig::default()).build(&rec).unwrap();
    let mut no_ind = rec.clone();
    no_ind.indication = None;
    let bare = builder(PromptConfig::default())
        .build(&no_ind)
        .unwrap()
        .len();
    let max = (long.len() + bare) / 2;
    let cfg = PromptConfig {
        max_prompt_length: max,
        on_too_long: OnTooLong::Truncate,
        ..Default::default()
    };
    let p = builder(cfg.clone()).build(&rec).unwrap();
    assert!(p.truncated);
    assert!(p.len() <= max, "{} > {max}", p.len());
    // The end of the indication is kept, its start is cut, the question and options stay.
    assert!(p.text.contains("Clinical context: …"), "{}", p.text);
    assert!(p.text.contains("word39\n\nWhich finding"));
    assert!(!p.text.contains("word0 "));
    assert!(
        p.text
            .contains("A. Consolidation\nB. Pneumothorax\nC. Normal lung\nD. Mass")
    );
    // As many words as fit: one more would not.
    let kept = p.text.matches("word").count();
    let mut longer = cfg.clone();
    longer.max_prompt_length = usize::MAX;
    let b_all = builder(longer);
    let mut one_more = rec.clone();
    one_more.indication = Some(format!("…{}", words[40 - kept - 1..].join(" ")));
    assert!(b_all.build(&one_more).unwrap().len() > max);

    // Nothing left to cut: rejected with the reason.
    let cfg = PromptConfig {
        max_prompt_length: bare - 1,
        on_too_long: OnTooLong::Truncate,
        ..Default::default()
    };
    let e = rejection(builder(cfg.clone()).build(&rec));
    assert_eq!(e.kind(), "too_long");
    assert!(
        e.to_string().contains("even without the clinical context"),
        "{e}"
    );
    let e = rejection(builder(cfg).build(&no_ind));
    assert!(
        e.to_string().contains("without any clinical context"),
        "{e}"
    );
}

#[test]
fn stats_render() {
    let mut s = PromptStats::default();
    assert_eq!(s.to_string(), "prompts: 0 built, 0 truncated, 0 rejected");
    let b = builder(PromptConfig::default());
    let p = b.build(&record()).unwrap();
    s.record_built(&p);
    let mut short = record();
    short.indication = None;
    let q = b.build(&short).unwrap();
    s.record_built(&q);
    let mut bad = record();
    bad.correct_answer = "Z".into();
    s.record_error(&b.build(&bad).unwrap_err());
    s.record_error(&anyhow::anyhow!("disk"));
    assert_eq!(s.min_tokens, Some(q.len()));
    assert_eq!(s.max_tokens, Some(p.len()));
    assert_eq!(s.mean_tokens(), Some((p.len() + q.len()) as f64 / 2.0));
    assert_eq!(
        s.to_string(),
        format!(
            "prompts: 2 built, tokens min/mean/max {}/{:.1}/{}, 0 truncated, 2 rejected \
             (correct_not_in_options: 1, other: 1)",
            q.len(),
            (p.len() + q.len()) as f64 / 2.0,
            p.len()
        )
    );
}

#[test]
fn stage_in_pipeline_skips_and_counts_rejections() {
    let b = Arc::new(builder(PromptConfig::default()));
    let stats = Arc::new(Mutex::new(PromptStats::default()));
    let items: Vec<PromptItem<u32>> = (0..5u32)
        .map(|i| {
            let mut input = record();
            input.id = format!("q{i}");
            if i == 3 {
                input.correct_answer = "F".into();
            }
            PromptItem { input, payload: i }
        })
        .collect();
    let mut p = Pipeline::new(PipelineOptions::quiet());
    let src = p.source("records", 4, items.into_iter().map(Ok));
    let (b2, s2) = (b.clone(), stats.clone());
    let out = p.stage("prompt", StageOptions::new(2, 4), src, move |_| {
        PromptStage::new(b2.clone(), s2.clone())
    });
    let (got, report) = p.run_collect("collect", out).unwrap();
    let payloads: Vec<u32> = got.iter().map(|x| x.payload).collect();
    assert_eq!(payloads, [0, 1, 2, 4]);
    assert!(got.iter().all(|x| x.prompt.id == format!("q{}", x.payload)));
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].seq, 3);
    assert!(report.skipped[0].reason.contains("record q3"));
    assert!(report.skipped[0].reason.contains("correct answer F"));
    let s = stats.lock().unwrap();
    assert_eq!(s.built, 4);
    assert_eq!(s.rejected.get("correct_not_in_options"), Some(&1));
}

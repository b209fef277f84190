//! Hand-written completions with every component's expected value worked out by hand from
//! DESIGN.md §5 (never computed by the code under test).
//!
//! The reference used by the table:
//! - correct answer B;
//! - explanation "Right pleural effusion; the effusion blunts the right angle." normalizes to
//!   right ×2, pleural, effusion ×2, blunts, angle: 7 tokens;
//! - Findings "Moderate right-sided pleural effusion. No pneumothorax. Heart size is normal."
//!   and Impression "Right pleural effusion, without consolidation." give the report terms
//!   consolidation, effusion, heart, moderate, normal, pleural, pneumothorax, right, sided,
//!   size ("without" is a stop word; "no" and "is" are shorter than 4).
//!
//! With 7 reference tokens, explanation F1 = 2c / (n + 7) for n reasoning tokens of which c are
//! shared (with multiplicity); the fractions below are that, worked out per case.

use super::normalize::normalize;
use super::parse::{self, Reasoning};
use super::*;
use crate::config::{RewardWeights, RewardsConfig};

fn reference() -> Reference {
    Reference::new(
        'B',
        "Right pleural effusion; the effusion blunts the right angle.",
        "Moderate right-sided pleural effusion. No pneumothorax. Heart size is normal.",
        "Right pleural effusion, without consolidation.",
    )
    .unwrap()
}

const W: &str = "<start_working_out>";
const WE: &str = "<end_working_out>";
const S: &str = "<SOLUTION>";
const SE: &str = "</SOLUTION>";

/// `<start_working_out>{work}<end_working_out><SOLUTION>{sol}</SOLUTION>`
fn wf(work: &str, sol: &str) -> String {
    format!("{W}{work}{WE}{S}{sol}{SE}")
}

struct Case {
    name: &'static str,
    completion: String,
    letter: Option<char>,
    /// correct, explanation, evidence, format, conciseness
    expect: [f64; 5],
}

fn case(
    name: &'static str,
    completion: impl Into<String>,
    letter: Option<char>,
    expect: [f64; 5],
) -> Case {
    Case {
        name,
        completion: completion.into(),
        letter,
        expect,
    }
}

const T1: f64 = 1.0 / 3.0;
const T2: f64 = 2.0 / 3.0;

fn cases() -> Vec<Case> {
    let b = Some('B');
    vec![
        // reasoning: right pleural effusion blunts angle + right pleural effusion: n=8, c=7.
        case(
            "well-formed",
            wf(
                "Right pleural effusion blunts the angle.",
                "B - right pleural effusion",
            ),
            b,
            [1.0, 14.0 / 15.0, 1.0, 1.0, 1.0],
        ),
        case(
            "wrong letter",
            wf(
                "Right pleural effusion blunts the angle.",
                "C - right pleural effusion",
            ),
            Some('C'),
            [0.0, 14.0 / 15.0, 1.0, 1.0, 1.0],
        ),
        case(
            "lowercase letter",
            wf(
                "Right pleural effusion blunts the angle.",
                "b - right pleural effusion",
            ),
            b,
            [1.0, 14.0 / 15.0, 1.0, 1.0, 1.0],
        ),
        // effusion: n=1, c=1 -> 2/8.
        case("(B)", wf("Effusion.", "(B)"), b, [1.0, 0.25, T1, 1.0, 1.0]),
        case("(b)", wf("Effusion.", "(b)"), b, [1.0, 0.25, T1, 1.0, 1.0]),
        // pleural effusion on right: n=4, c=3 -> 6/11.
        case(
            "B.",
            wf("Pleural effusion on the right.", "B."),
            b,
            [1.0, 6.0 / 11.0, 1.0, 1.0, 1.0],
        ),
        // "Answer" starts with A followed by a letter: no letter, nothing stripped: effusion answer b, n=3, c=1.
        case(
            "Answer: B",
            wf("Effusion.", "Answer: B"),
            None,
            [0.0, 0.2, T1, 1.0, 1.0],
        ),
        case(
            "two SOLUTION blocks, first right",
            format!("{W}Effusion.{WE}{S}B{SE}{S}C{SE}"),
            b,
            [1.0, 0.25, T1, 0.0, 1.0],
        ),
        case(
            "two SOLUTION blocks, first wrong",
            format!("{W}Effusion.{WE}{S}C{SE}{S}B{SE}"),
            Some('C'),
            [0.0, 0.25, T1, 0.0, 1.0],
        ),
        // right pleural effusion: n=3, c=3 -> 6/10.
        case(
            "empty solution",
            wf("Right pleural effusion.", ""),
            None,
            [0.0, 0.6, 1.0, 0.0, 1.0],
        ),
        case(
            "blank solution",
            wf("Effusion.", "   "),
            None,
            [0.0, 0.25, T1, 0.0, 1.0],
        ),
        // effusion + "and b" (leading "A " stripped): n=3, c=1 -> 2/10.
        case(
            "A and B",
            wf("Effusion.", "A and B"),
            None,
            [0.0, 0.2, T1, 1.0, 1.0],
        ),
        case(
            "A AND B",
            wf("Effusion.", "A AND B"),
            None,
            [0.0, 0.2, T1, 1.0, 1.0],
        ),
        case(
            "B or C",
            wf("Effusion.", "B or C"),
            None,
            [0.0, 0.2, T1, 1.0, 1.0],
        ),
        case(
            "b and c",
            wf("Effusion.", "b and c"),
            None,
            [0.0, 0.2, T1, 1.0, 1.0],
        ),
        // "/" is not stripped: "/C" -> c; effusion c: n=2, c=1 -> 2/9.
        case(
            "B/C",
            wf("Effusion.", "B/C"),
            None,
            [0.0, 2.0 / 9.0, T1, 1.0, 1.0],
        ),
        case(
            "B & C",
            wf("Effusion.", "B & C"),
            None,
            [0.0, 2.0 / 9.0, T1, 1.0, 1.0],
        ),
        case(
            "B, C",
            wf("Effusion.", "B, C"),
            None,
            [0.0, 2.0 / 9.0, T1, 1.0, 1.0],
        ),
        case(
            "(A), (B)",
            wf("Effusion.", "(A), (B)"),
            None,
            [0.0, 2.0 / 9.0, T1, 1.0, 1.0],
        ),
        // "B) and C)": strip "B) " -> "and C)": effusion and c, n=3, c=1.
        case(
            "B) and C)",
            wf("Effusion.", "B) and C)"),
            None,
            [0.0, 0.2, T1, 1.0, 1.0],
        ),
        // Not a list: "bilateral" is a word. effusion and bilateral effusion: n=4, c=2 -> 4/11.
        case(
            "B and bilateral",
            wf("Effusion.", "B and bilateral effusion"),
            b,
            [1.0, 4.0 / 11.0, T1, 1.0, 1.0],
        ),
        // Not a list: "because". ", because of effusion" (comma not stripped): n=4, c=2.
        case(
            "B, because",
            wf("Effusion.", "B, because of effusion"),
            b,
            [1.0, 4.0 / 11.0, T1, 1.0, 1.0],
        ),
        // "B. C." is no list by the definition (no separator): letter B; "C." -> c. n=2, c=1.
        case(
            "B. C.",
            wf("Effusion.", "B. C."),
            b,
            [1.0, 2.0 / 9.0, T1, 1.0, 1.0],
        ),
        // Solution only: reasoning " right pleural effusion": n=3, c=3.
        case(
            "no working-out",
            format!("{S}B - Right pleural effusion{SE}"),
            b,
            [1.0, 0.6, 1.0, 0.0, 1.0],
        ),
        // Working-out only; the trailing B is outside any block.
        case(
            "no SOLUTION",
            format!("{W}Right pleural effusion.{WE}B"),
            None,
            [0.0, 0.6, 1.0, 0.0, 1.0],
        ),
        // No block: whole text: answer is b right pleural effusion: n=6, c=3 -> 6/13.
        case(
            "no tags",
            "The answer is B: right pleural effusion.",
            None,
            [0.0, 6.0 / 13.0, 1.0, 0.0, 1.0],
        ),
        // Unclosed SOLUTION, no block: tags removed: "B - effusion": n=2, c=1.
        case(
            "unclosed SOLUTION",
            format!("{S}B - effusion"),
            None,
            [0.0, 2.0 / 9.0, T1, 0.0, 1.0],
        ),
        // Tag removed without a space: "pleuraleffusion" is one unknown token.
        case(
            "tag glues words",
            format!("pleural{WE}effusion"),
            None,
            [0.0, 0.0, 0.0, 0.0, 1.0],
        ),
        // 19 + 23 + 200 + 17 + 10 + 1 + 11 = 281 chars; right pleural effusion zzz…: n=4, c=3.
        case(
            "over-long",
            wf(&format!("Right pleural effusion {}", "z".repeat(200)), "B"),
            b,
            [1.0, 6.0 / 11.0, 1.0, 1.0, 0.0],
        ),
        // 19 + 162 + 17 + 22 = 220 chars exactly: concise. One unknown token.
        case(
            "220 chars",
            wf(&"y".repeat(162), "B"),
            b,
            [1.0, 0.0, 0.0, 1.0, 1.0],
        ),
        case(
            "221 chars",
            wf(&"y".repeat(163), "B"),
            b,
            [1.0, 0.0, 0.0, 1.0, 0.0],
        ),
        case(
            "220 chars + trimmed blanks",
            format!("  \n{}\n ", wf(&"y".repeat(162), "B")),
            b,
            [1.0, 0.0, 0.0, 1.0, 1.0],
        ),
        // 220 Unicode scalars but 382 bytes.
        case(
            "220 unicode scalars",
            wf(&"é".repeat(162), "B"),
            b,
            [1.0, 0.0, 0.0, 1.0, 1.0],
        ),
        // épanchement pleural droit effusion + "– épanchement" (the en dash is not stripped,
        // it separates): n=5, c=2 (pleural, effusion) -> 4/12; terms pleural effusion.
        case(
            "unicode words",
            wf("Épanchement pleural droit — effusion.", "B – épanchement"),
            b,
            [1.0, 1.0 / 3.0, T2, 1.0, 1.0],
        ),
        // 胸水 is one token (CJK letters): n=2, c=1.
        case(
            "CJK",
            wf("胸水 pleural", "B"),
            b,
            [1.0, 2.0 / 9.0, T1, 1.0, 1.0],
        ),
        // right sided pleural effusion heart size normal: n=7, c=3 -> 6/14; 7 terms.
        case(
            "report words with punctuation",
            wf("Right-sided, pleural (effusion); heart-size normal!", "B"),
            b,
            [1.0, 3.0 / 7.0, 1.0, 1.0, 1.0],
        ),
        // "without" is a stop word: only pleural is a term. n=2, c=1.
        case(
            "stop word",
            wf("Without pleural", "B"),
            b,
            [1.0, 2.0 / 9.0, T1, 1.0, 1.0],
        ),
        // no pneumothorax is seen: n=4, c=0; pneumothorax is a term.
        case(
            "short words are no terms",
            wf("No pneumothorax is seen.", "B"),
            b,
            [1.0, 0.0, T1, 1.0, 1.0],
        ),
        // effusion ×3 against ×2: c=2, n=3 -> 4/10; one distinct term.
        case(
            "multiplicity capped",
            wf("effusion effusion effusion", "B"),
            b,
            [1.0, 0.4, T1, 1.0, 1.0],
        ),
        case(
            "single token",
            wf("right", "B"),
            b,
            [1.0, 0.25, T1, 1.0, 1.0],
        ),
        case(
            "articles dropped",
            wf("The a an effusion", "B"),
            b,
            [1.0, 0.25, T1, 1.0, 1.0],
        ),
        case(
            "surrounding whitespace",
            format!("  \n{W}Effusion.{WE}\n\n{S}B{SE}\n "),
            b,
            [1.0, 0.25, T1, 1.0, 1.0],
        ),
        case(
            "text before",
            format!("Sure! {}", wf("Effusion.", "B")),
            b,
            [1.0, 0.25, T1, 0.0, 1.0],
        ),
        case(
            "text between",
            format!("{W}Effusion.{WE} so {S}B{SE}"),
            b,
            [1.0, 0.25, T1, 0.0, 1.0],
        ),
        case(
            "text after",
            format!("{} Done.", wf("Effusion.", "B")),
            b,
            [1.0, 0.25, T1, 0.0, 1.0],
        ),
        case(
            "empty working-out",
            wf("  ", "B - effusion"),
            b,
            [1.0, 0.25, T1, 0.0, 1.0],
        ),
        case(
            "blocks swapped",
            format!("{S}B{SE}{W}Effusion.{WE}"),
            b,
            [1.0, 0.25, T1, 0.0, 1.0],
        ),
        case(
            "two working-outs",
            format!("{W}Effusion.{WE}{W}Right.{WE}{S}B{SE}"),
            b,
            [1.0, 0.25, T1, 0.0, 1.0],
        ),
        // K is outside A–J: no letter, not stripped: effusion k.
        case(
            "letter K",
            wf("Effusion.", "K"),
            None,
            [0.0, 2.0 / 9.0, T1, 1.0, 1.0],
        ),
        case(
            "BC",
            wf("Effusion.", "BC"),
            None,
            [0.0, 2.0 / 9.0, T1, 1.0, 1.0],
        ),
        case(
            "B2",
            wf("Effusion.", "B2"),
            None,
            [0.0, 2.0 / 9.0, T1, 1.0, 1.0],
        ),
        case(
            "( B )",
            wf("Effusion.", "( B )"),
            None,
            [0.0, 2.0 / 9.0, T1, 1.0, 1.0],
        ),
        // effusion + right pleural effusion: n=4, c=4 -> 8/11.
        case(
            "B: reason",
            wf("Effusion.", "B: Right pleural effusion"),
            b,
            [1.0, 8.0 / 11.0, 1.0, 1.0, 1.0],
        ),
        // right + effusion: n=2, c=2 -> 4/9.
        case(
            "B-reason",
            wf("Right.", "B-effusion"),
            b,
            [1.0, 4.0 / 9.0, T2, 1.0, 1.0],
        ),
        case("empty completion", "", None, [0.0, 0.0, 0.0, 0.0, 1.0]),
        case(
            "lowercase tags",
            format!("{W}Effusion{WE}<solution>B</solution>"),
            None,
            [0.0, 0.25, T1, 0.0, 1.0],
        ),
        // First SOLUTION is inside the working-out: letter A. Working-out content
        // "Effusion<SOLUTION>A</SOLUTION>" -> effusion solution solution ("a" dropped); the
        // solution "A" strips to "". n=3, c=1.
        case(
            "nested SOLUTION",
            format!("{W}Effusion{S}A{SE}{WE}{S}B{SE}"),
            Some('A'),
            [0.0, 0.2, T1, 0.0, 1.0],
        ),
        // effusion 2cm 3 ribs: n=4, c=1.
        case(
            "digits",
            wf("Effusion 2cm, 3 ribs.", "B"),
            b,
            [1.0, 2.0 / 11.0, T1, 1.0, 1.0],
        ),
        // effusion + effusion ("J - " stripped): n=2, c=2 -> 4/9.
        case(
            "letter J",
            wf("Effusion.", "J - effusion"),
            Some('J'),
            [0.0, 4.0 / 9.0, T1, 1.0, 1.0],
        ),
    ]
}

#[test]
fn tag_lengths_used_by_the_hand_counts() {
    assert_eq!([W.len(), WE.len(), S.len(), SE.len()], [19, 17, 10, 11]);
}

#[test]
fn table_of_hand_scored_completions() {
    let r = reference();
    let cfg = RewardsConfig::default();
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let got = score(&c.completion, &r, &cfg);
        let ok = got.letter == c.letter
            && got
                .components()
                .iter()
                .zip(c.expect)
                .all(|(g, e)| (g - e).abs() < 1e-12);
        let w = [1.0, 0.6, 0.2, 0.1, 0.1];
        let total: f64 = w.iter().zip(c.expect).map(|(w, e)| w * e).sum();
        if !ok || (got.total - total).abs() > 1e-12 {
            failures.push(format!(
                "{}: {:?}\n  got      {:?} letter {:?} total {}\n  expected {:?} letter {:?} total {}",
                c.name,
                c.completion,
                got.components(),
                got.letter,
                got.total,
                c.expect,
                c.letter,
                total
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn well_formed_total_by_hand() {
    // 1 + 0.6 × 14/15 + 0.2 + 0.1 + 0.1 = 1.96
    let b = score(
        &wf(
            "Right pleural effusion blunts the angle.",
            "B - right pleural effusion",
        ),
        &reference(),
        &RewardsConfig::default(),
    );
    assert!((b.total - 1.96).abs() < 1e-12, "{}", b.total);
}

#[test]
fn weights_and_limit_come_from_the_config() {
    let cfg = RewardsConfig {
        weights: RewardWeights {
            correct: 2.0,
            explanation: 0.0,
            evidence: 1.0,
            format: 0.5,
            conciseness: 3.0,
        },
        conciseness_max_chars: 10,
    };
    // Components 1, 1/4, 1/3, 1, 0 (40 chars > 10): 2 + 1/3 + 0.5 = 17/6.
    let b = score(&wf("Effusion.", "B"), &reference(), &cfg);
    assert_eq!(b.conciseness, 0.0);
    assert!((b.total - 17.0 / 6.0).abs() < 1e-12, "{}", b.total);
    // "B" alone: 1 char <= 10. No SOLUTION (correct 0); reasoning "b" shares nothing with
    // the explanation and is no report term; not well-formed. Components 0, 0, 0, 0, 1 -> 3.
    let b = score("B", &reference(), &cfg);
    assert_eq!(b.components(), [0.0, 0.0, 0.0, 0.0, 1.0]);
    assert!((b.total - 3.0).abs() < 1e-12);
}

#[test]
fn report_terms_by_hand() {
    assert_eq!(
        reference().report_terms(),
        [
            "consolidation",
            "effusion",
            "heart",
            "moderate",
            "normal",
            "pleural",
            "pneumothorax",
            "right",
            "sided",
            "size"
        ]
    );
    // Every stop word is dropped; 4-letter words stay, 3-letter words go.
    let r = Reference::new(
        'a',
        "",
        "With without there these this that from have been were which their also into than then when where while within upon over under more most",
        "some such only other each very both about after before again being does will shall should would could seen noted findings impression study images image lung rib",
    )
    .unwrap();
    assert_eq!(r.report_terms(), ["lung"]);
    assert_eq!(r.correct_answer, 'A');
}

#[test]
fn bad_correct_answer_is_rejected() {
    assert!(Reference::new('K', "", "", "").is_err());
    assert!(Reference::new('1', "", "", "").is_err());
}

#[test]
fn normalize_squad_style() {
    assert_eq!(
        normalize("The Right-sided EFFUSION, an ÉCHO (a) 2cm."),
        ["right", "sided", "effusion", "écho", "2cm"]
    );
    assert!(normalize(" \n\t ").is_empty());
}

#[test]
fn reasoning_text_follows_the_definition() {
    let c = wf("Effusion.", "(B) - : right");
    assert_eq!(parse::reasoning(&c).text(), "Effusion. right");
    assert_eq!(
        parse::reasoning(&format!("x {S}y")).text(),
        "x y",
        "no block: tags removed"
    );
    assert_eq!(
        parse::reasoning(&format!("{S} B {SE}")),
        Reasoning::Blocks("", "")
    );
}

#[test]
fn empty_explanation_gives_zero_f1() {
    let r = Reference::new('B', "", "", "").unwrap();
    let b = score(&wf("Effusion.", "B"), &r, &RewardsConfig::default());
    assert_eq!(b.components(), [1.0, 0.0, 0.0, 1.0, 1.0]);
}

/// Random mixes of tags, letters, separators and multi-byte characters: the scanner never
/// panics (byte offsets stay on character boundaries), every component stays in [0, 1], and
/// the total is the weighted sum.
#[test]
fn random_completions_never_panic_and_stay_in_range() {
    use rand::{Rng, SeedableRng};
    let pieces = [
        W, WE, S, SE, "B", "b", "(", ")", ".", "-", ":", ",", "/", "&", "and", "or", " ", "\n",
        "é", "胸水", "İ", "right", "effusion", "pleural", "A", "J", "K", "2", "\u{a0}", "Σ",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let r = reference();
    let cfg = RewardsConfig::default();
    for _ in 0..3000 {
        let n = rng.random_range(0..14);
        let c: String = (0..n)
            .map(|_| pieces[rng.random_range(0..pieces.len())])
            .collect();
        let b = score(&c, &r, &cfg);
        for x in b.components() {
            assert!((0.0..=1.0).contains(&x), "{c:?}: {:?}", b.components());
        }
        let w = [1.0, 0.6, 0.2, 0.1, 0.1];
        let total: f64 = w.iter().zip(b.components()).map(|(w, x)| w * x).sum();
        assert!((b.total - total).abs() < 1e-12);
        if b.format == 1.0 {
            assert!(c.trim().starts_with(W) && c.trim().ends_with(SE), "{c:?}");
        }
    }
}

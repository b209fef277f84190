//! The five reward components and their weighted sum (DESIGN.md §5, documented for users in
//! `docs/rewards.md`).
//!
//! A [`Reference`] is prepared once per question (its normalized explanation tokens and its
//! report-term set), then [`score`] rates each of the G completions against it. Components
//! are returned unweighted in [0, 1] next to the weighted total, so that they can be logged
//! separately (TRL's `rewards/<name>/mean`) while the advantage uses the total.

pub mod normalize;
pub mod parse;
pub mod stage;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::RewardsConfig;

/// Words of at least four letters that say nothing about a particular study, so they never
/// count as report evidence.
pub const EVIDENCE_STOP_WORDS: [&str; 50] = [
    "with",
    "without",
    "there",
    "these",
    "this",
    "that",
    "from",
    "have",
    "been",
    "were",
    "which",
    "their",
    "also",
    "into",
    "than",
    "then",
    "when",
    "where",
    "while",
    "within",
    "upon",
    "over",
    "under",
    "more",
    "most",
    "some",
    "such",
    "only",
    "other",
    "each",
    "very",
    "both",
    "about",
    "after",
    "before",
    "again",
    "being",
    "does",
    "will",
    "shall",
    "should",
    "would",
    "could",
    "seen",
    "noted",
    "findings",
    "impression",
    "study",
    "images",
    "image",
];

/// How many distinct report terms earn the full evidence reward.
pub const EVIDENCE_FULL_TERMS: usize = 3;

/// The component names, in TRL metric order (`rewards/<name>/mean`).
pub const COMPONENT_NAMES: [&str; 5] = [
    "correct",
    "explanation",
    "evidence",
    "format",
    "conciseness",
];

const NONE: u32 = u32::MAX;

/// What one normalized token of a completion can match in the reference.
#[derive(Debug, Clone, Copy)]
struct TokenRole {
    /// Index among the explanation's distinct tokens, or `NONE`.
    explanation: u32,
    /// How many times the explanation has this token.
    explanation_count: u32,
    /// Index among the report terms, or `NONE`.
    term: u32,
}

/// One question's answer key, prepared once and shared by its G completions.
#[derive(Debug, Clone)]
pub struct Reference {
    /// The correct letter, A–J, upper case.
    pub correct_answer: char,
    /// Tokens of normalize(explanation), with multiplicity.
    explanation_len: usize,
    /// Distinct explanation tokens.
    explanation_distinct: usize,
    /// Distinct report terms (see [`Reference::report_terms`]).
    term_count: usize,
    /// Every token that matters, with its roles.
    roles: HashMap<Box<str>, TokenRole>,
}

/// Whether `token` (already normalized) is a report term: at least four characters
/// (Unicode scalars) and not an evidence stop word.
pub fn is_report_term(token: &str) -> bool {
    token.chars().count() >= 4 && !EVIDENCE_STOP_WORDS.contains(&token)
}

impl Reference {
    /// The answer key of a dataset record whose prompt was built with `correct_letter` (the
    /// letter after any option shuffle): its explanation, Findings and Impression.
    pub fn for_record(
        correct_letter: char,
        record: &crate::data::record::Record,
    ) -> Result<Reference> {
        Self::new(
            correct_letter,
            &record.explanation,
            record.findings.as_deref().unwrap_or(""),
            record.impression.as_deref().unwrap_or(""),
        )
        .map_err(|e| e.context(format!("question {}", record.id)))
    }

    /// Prepares a question's answer key: `correct_answer` A–J in either case; the explanation
    /// is `correct_answer_explanation`; Findings and Impression feed the evidence reward
    /// (pass "" when the record lacks them).
    pub fn new(
        correct_answer: char,
        explanation: &str,
        findings: &str,
        impression: &str,
    ) -> Result<Reference> {
        if !matches!(correct_answer, 'A'..='J' | 'a'..='j') {
            bail!("correct answer {correct_answer:?} is not a letter A–J");
        }
        let mut roles: HashMap<Box<str>, TokenRole> = HashMap::new();
        let mut explanation_len = 0;
        let mut explanation_distinct = 0u32;
        let mut buf = String::new();
        normalize::for_each_token(explanation, &mut buf, |t| {
            explanation_len += 1;
            let r = roles.entry(t.into()).or_insert(TokenRole {
                explanation: NONE,
                explanation_count: 0,
                term: NONE,
            });
            if r.explanation == NONE {
                r.explanation = explanation_distinct;
                explanation_distinct += 1;
            }
            r.explanation_count += 1;
        });
        let mut term_count = 0u32;
        let report = format!("{findings} {impression}");
        normalize::for_each_token(&report, &mut buf, |t| {
            if !is_report_term(t) {
                return;
            }
            let r = roles.entry(t.into()).or_insert(TokenRole {
                explanation: NONE,
                explanation_count: 0,
                term: NONE,
            });
            if r.term == NONE {
                r.term = term_count;
                term_count += 1;
            }
        });
        Ok(Reference {
            correct_answer: correct_answer.to_ascii_uppercase(),
            explanation_len,
            explanation_distinct: explanation_distinct as usize,
            term_count: term_count as usize,
            roles,
        })
    }

    /// The report terms, sorted (for inspection and documentation examples).
    pub fn report_terms(&self) -> Vec<&str> {
        let mut terms: Vec<&str> = self
            .roles
            .iter()
            .filter(|(_, r)| r.term != NONE)
            .map(|(t, _)| &**t)
            .collect();
        terms.sort_unstable();
        terms
    }
}

/// The five components of one completion's reward.
///
/// `correct`, `explanation`, `evidence`, `format` and `conciseness` are UNWEIGHTED, each in
/// [0, 1]; `total` is their sum weighted by `rewards.weights` (what the advantage uses).
/// Serialized (evaluation's predictions and reports) as the five components and the total; the
/// letter is kept apart there.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RewardBreakdown {
    /// 1 when the single answer letter equals the correct one, else 0.
    pub correct: f64,
    /// Token F1 between the reasoning and the reference explanation.
    pub explanation: f64,
    /// min(1, k/3) with k distinct report terms used in the reasoning.
    pub evidence: f64,
    /// 1 for exactly one well-formed working-out + SOLUTION pair, else 0.
    pub format: f64,
    /// 1 when the trimmed completion has at most `conciseness_max_chars` characters, else 0.
    pub conciseness: f64,
    /// Weighted sum of the five components.
    pub total: f64,
    /// The answer letter read from the SOLUTION (upper case), if any.
    #[serde(skip)]
    pub letter: Option<char>,
}

impl RewardBreakdown {
    /// Adds `other`'s components and total to these (the letter is not summed): running sums
    /// for means over many completions.
    pub fn add(&mut self, other: &RewardBreakdown) {
        self.correct += other.correct;
        self.explanation += other.explanation;
        self.evidence += other.evidence;
        self.format += other.format;
        self.conciseness += other.conciseness;
        self.total += other.total;
    }

    /// These sums divided by `n` (zeros for `n == 0`), without a letter.
    pub fn mean(&self, n: usize) -> RewardBreakdown {
        let d = if n == 0 { 1.0 } else { n as f64 };
        RewardBreakdown {
            correct: self.correct / d,
            explanation: self.explanation / d,
            evidence: self.evidence / d,
            format: self.format / d,
            conciseness: self.conciseness / d,
            total: self.total / d,
            letter: None,
        }
    }

    /// The unweighted components in [`COMPONENT_NAMES`] order.
    pub fn components(&self) -> [f64; 5] {
        [
            self.correct,
            self.explanation,
            self.evidence,
            self.format,
            self.conciseness,
        ]
    }
}

/// Scores one completion (decoded with special tokens skipped) against its question's
/// reference, with the weights and character limit of `cfg`.
pub fn score(completion: &str, reference: &Reference, cfg: &RewardsConfig) -> RewardBreakdown {
    let letter = parse::solution(completion).and_then(parse::letter);
    let correct = f64::from(u8::from(letter == Some(reference.correct_answer)));

    // One pass over the reasoning's tokens feeds both overlap rewards.
    let mut used = vec![0u32; reference.explanation_distinct];
    let mut seen = vec![false; reference.term_count];
    let (mut predicted, mut common, mut terms) = (0usize, 0usize, 0usize);
    let mut buf = String::new();
    let mut visit = |t: &str| {
        predicted += 1;
        if let Some(r) = reference.roles.get(t) {
            if r.explanation != NONE {
                let u = &mut used[r.explanation as usize];
                if *u < r.explanation_count {
                    *u += 1;
                    common += 1;
                }
            }
            if r.term != NONE && !seen[r.term as usize] {
                seen[r.term as usize] = true;
                terms += 1;
            }
        }
    };
    match parse::reasoning(completion) {
        // The joining space separates the two parts' tokens, so tokenizing them one after
        // the other is the same as tokenizing "work solution".
        parse::Reasoning::Blocks(work, sol) => {
            normalize::for_each_token(work, &mut buf, &mut visit);
            normalize::for_each_token(sol, &mut buf, &mut visit);
        }
        parse::Reasoning::Untagged(text) => normalize::for_each_token(&text, &mut buf, &mut visit),
    }
    // F1 = 2PR/(P+R) with P = c/predicted, R = c/reference, which equals 2c/(predicted+reference).
    let explanation = if common == 0 {
        0.0
    } else {
        2.0 * common as f64 / (predicted + reference.explanation_len) as f64
    };
    let evidence = (terms as f64 / EVIDENCE_FULL_TERMS as f64).min(1.0);
    let format = f64::from(u8::from(parse::well_formed(completion)));
    let conciseness = f64::from(u8::from(
        completion.trim().chars().count() <= cfg.conciseness_max_chars,
    ));
    let w = &cfg.weights;
    let total = w.correct * correct
        + w.explanation * explanation
        + w.evidence * evidence
        + w.format * format
        + w.conciseness * conciseness;
    RewardBreakdown {
        correct,
        explanation,
        evidence,
        format,
        conciseness,
        total,
        letter,
    }
}

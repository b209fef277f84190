//! The prompt builder: dataset record + image -> model input ids, with the model's own chat
//! template.
//!
//! What goes in (DESIGN.md section 5): the system instruction (`prompt.system`), the image, the
//! Indication as clinical context when `prompt.include_indication`, the question and the
//! options one per line as `A. text`. Findings and Impression never go in — they would leak the
//! answer; [`PromptInput`] has no field for them, so no code path can add them.
//!
//! The user turn's text is
//! `Clinical context: {indication}\n\n{question}\nA. {option}\nB. {option}...`
//! (no context line without an indication), after an image part, and the system message is
//! folded in by Gemma 3's template:
//! `<bos><start_of_turn>user\n{system}\n\n<start_of_image>{text}<end_of_turn>\n<start_of_turn>model\n`.
//!
//! Records that cannot make a fair question are rejected with a [`Rejection`] naming the
//! reason (no options, mixed or duplicate option letters, a correct answer that is not one of
//! the options, too long for `max_prompt_length` under `on_too_long: reject`); the stage turns
//! these into skipped items of the runtime's report, and [`PromptStats`] counts them per
//! reason along with the min / mean / max prompt length.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::config::{OnTooLong, PromptConfig};
use crate::model::chat_template::{Message, Part};
use crate::model::processor::Gemma3Processor;
use crate::stages::Stage;

/// What the builder needs from a dataset record (the pipeline fills it from `data::Record`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PromptInput {
    /// Question id (for error messages and to join results back).
    pub id: String,
    /// The question text.
    pub question: String,
    /// Options as in the dataset, with or without `A.` prefixes.
    pub options: Vec<String>,
    /// The correct option: a letter (`B`, `b`, `B.`, `(B)`), `B. text`, or the option's text.
    pub correct_answer: String,
    /// The record's Indication (clinical context), if any.
    pub indication: Option<String>,
    /// Whether an image goes with the question (an image placeholder is put first in the user
    /// turn); false for text-only models.
    pub has_image: bool,
}

/// One normalized answer option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerOption {
    /// Upper-case letter.
    pub letter: char,
    /// Text without the letter prefix, on one line.
    pub text: String,
}

/// A built prompt, ready for the sampler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltPrompt {
    /// Question id.
    pub id: String,
    /// The rendered chat text (image placeholders not yet expanded), for logs and debugging.
    pub text: String,
    /// Model input ids, image blocks expanded.
    pub input_ids: Vec<u32>,
    /// 1 on image soft tokens (transformers' `token_type_ids`).
    pub token_type_ids: Vec<u32>,
    /// Images in the prompt (0 or 1).
    pub num_images: usize,
    /// The options as shown to the model.
    pub options: Vec<AnswerOption>,
    /// The correct letter, checked to be one of `options`.
    pub correct_letter: char,
    /// Whether the indication was shortened to fit `max_prompt_length`.
    pub truncated: bool,
}

impl BuiltPrompt {
    /// Prompt length in tokens (image tokens included).
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether the prompt has no tokens (never for a built prompt).
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// Why a record makes no prompt. Each is a data fault, so the runtime skips and records it
/// under `on_bad_item: skip`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The question is empty.
    #[error("the question is empty")]
    EmptyQuestion,
    /// No options.
    #[error("the record has no options")]
    NoOptions,
    /// More than 26 options.
    #[error("the record has {0} options, more than the 26 letters")]
    TooManyOptions(usize),
    /// Some options have a letter prefix and some do not.
    #[error("options mix lettered and unlettered entries: {0:?}")]
    MixedOptionLetters(Vec<String>),
    /// Two options have the same letter.
    #[error("option letter {0} appears more than once")]
    DuplicateLetter(char),
    /// An option is empty once its prefix is removed.
    #[error("option {0} is empty")]
    EmptyOption(usize),
    /// The correct answer is not a letter, a lettered option or an option's text.
    #[error("correct answer {0:?} is not an option letter")]
    BadCorrectAnswer(String),
    /// The correct letter is not one of the options' letters.
    #[error("correct answer {letter} is not among the options {letters}")]
    CorrectNotInOptions {
        /// The record's correct letter.
        letter: char,
        /// The option letters, e.g. `A, B, C, D`.
        letters: String,
    },
    /// Longer than `max_prompt_length` (after shortening the indication under `truncate`).
    #[error("prompt has {tokens} tokens, more than prompt.max_prompt_length = {max}{hint}")]
    TooLong {
        /// Tokens of the prompt (without indication when truncation was tried).
        tokens: usize,
        /// The limit.
        max: usize,
        /// What was tried.
        hint: &'static str,
    },
}

impl Rejection {
    /// A short stable name for counting (`too_long`, `correct_not_in_options`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::EmptyQuestion => "empty_question",
            Rejection::NoOptions => "no_options",
            Rejection::TooManyOptions(_) => "too_many_options",
            Rejection::MixedOptionLetters(_) => "mixed_option_letters",
            Rejection::DuplicateLetter(_) => "duplicate_letter",
            Rejection::EmptyOption(_) => "empty_option",
            Rejection::BadCorrectAnswer(_) => "bad_correct_answer",
            Rejection::CorrectNotInOptions { .. } => "correct_not_in_options",
            Rejection::TooLong { .. } => "too_long",
        }
    }
}

/// Split a leading option letter off: `A. text`, `A) text`, `A: text`, `(A) text`, also with a
/// lower-case letter. A letter must be followed by its punctuation and then a space or the
/// end, so `A small effusion` or `I/O` are texts, not prefixes.
pub fn split_letter(s: &str) -> (Option<char>, &str) {
    let t = s.trim();
    let mut chars = t.char_indices();
    let (paren, letter_at) = match chars.next() {
        Some((_, '(')) => (true, 1),
        Some(_) => (false, 0),
        None => return (None, t),
    };
    let Some(letter) = t[letter_at..].chars().next() else {
        return (None, t);
    };
    if !letter.is_ascii_alphabetic() {
        return (None, t);
    }
    let after = &t[letter_at + 1..];
    let rest = if paren {
        after.strip_prefix(')')
    } else {
        after
            .strip_prefix('.')
            .or_else(|| after.strip_prefix(')'))
            .or_else(|| after.strip_prefix(':'))
    };
    match rest {
        Some(r) if r.is_empty() || r.starts_with(char::is_whitespace) => {
            (Some(letter.to_ascii_uppercase()), r.trim())
        }
        _ => (None, t),
    }
}

/// Normalize options to `A. text` form. All lettered (letters kept, in the given order) or all
/// unlettered (lettered A, B, C... by position); anything else is a [`Rejection`].
/// Line breaks inside an option become spaces, so each option stays on one line.
pub fn normalize_options(options: &[String]) -> Result<Vec<AnswerOption>, Rejection> {
    if options.is_empty() {
        return Err(Rejection::NoOptions);
    }
    if options.len() > 26 {
        return Err(Rejection::TooManyOptions(options.len()));
    }
    let split: Vec<(Option<char>, &str)> = options.iter().map(|o| split_letter(o)).collect();
    let lettered = split.iter().filter(|(l, _)| l.is_some()).count();
    if lettered != 0 && lettered != split.len() {
        return Err(Rejection::MixedOptionLetters(options.to_vec()));
    }
    let mut out: Vec<AnswerOption> = Vec::with_capacity(options.len());
    for (i, (letter, text)) in split.into_iter().enumerate() {
        let letter = letter.unwrap_or((b'A' + i as u8) as char);
        if out.iter().any(|o| o.letter == letter) {
            return Err(Rejection::DuplicateLetter(letter));
        }
        let text = one_line(text);
        if text.is_empty() {
            return Err(Rejection::EmptyOption(i + 1));
        }
        out.push(AnswerOption { letter, text });
    }
    Ok(out)
}

/// The correct letter of a record, checked against the normalized options.
pub fn correct_letter(answer: &str, options: &[AnswerOption]) -> Result<char, Rejection> {
    let a = answer.trim();
    let letter = match split_letter(a) {
        (Some(l), _) => Some(l),
        (None, _) => {
            let mut cs = a.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) if c.is_ascii_alphabetic() => Some(c.to_ascii_uppercase()),
                _ => options
                    .iter()
                    .find(|o| !a.is_empty() && o.text.eq_ignore_ascii_case(&one_line(a)))
                    .map(|o| o.letter),
            }
        }
    };
    let letter = letter.ok_or_else(|| Rejection::BadCorrectAnswer(answer.to_owned()))?;
    if options.iter().any(|o| o.letter == letter) {
        Ok(letter)
    } else {
        Err(Rejection::CorrectNotInOptions {
            letter,
            letters: options
                .iter()
                .map(|o| o.letter.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// Collapse line breaks (and the spaces around them) into single spaces and trim.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The user turn's text (see the module doc for the layout).
pub fn user_text(question: &str, options: &[AnswerOption], indication: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(ind) = indication {
        s.push_str("Clinical context: ");
        s.push_str(ind);
        s.push_str("\n\n");
    }
    s.push_str(question.trim());
    for o in options {
        s.push('\n');
        s.push(o.letter);
        s.push_str(". ");
        s.push_str(&o.text);
    }
    s
}

/// Builds prompts for one model and one prompt configuration. Immutable and `Sync`: share one
/// behind an `Arc` across stage workers.
#[derive(Debug)]
pub struct PromptBuilder {
    processor: Arc<Gemma3Processor>,
    config: PromptConfig,
}

impl PromptBuilder {
    /// A builder over the model's processor (tokenizer, template, image settings).
    pub fn new(processor: Arc<Gemma3Processor>, config: PromptConfig) -> Self {
        Self { processor, config }
    }

    /// The prompt settings.
    pub fn config(&self) -> &PromptConfig {
        &self.config
    }

    /// The processor.
    pub fn processor(&self) -> &Gemma3Processor {
        &self.processor
    }

    /// Build the prompt of one record. `Err` holds a [`Rejection`] (downcast it to count
    /// reasons) or a tokenizer / template failure, with the record id as context.
    pub fn build(&self, input: &PromptInput) -> Result<BuiltPrompt> {
        use anyhow::Context as _;
        self.build_inner(input)
            .with_context(|| format!("record {}: prompt rejected", input.id))
    }

    fn build_inner(&self, input: &PromptInput) -> Result<BuiltPrompt> {
        let question = input.question.trim();
        if question.is_empty() {
            return Err(Rejection::EmptyQuestion.into());
        }
        let options = normalize_options(&input.options)?;
        let correct = correct_letter(&input.correct_answer, &options)?;
        let indication = if self.config.include_indication {
            input
                .indication
                .as_deref()
                .map(one_line)
                .filter(|s| !s.is_empty())
        } else {
            None
        };

        let render = |ind: Option<&str>| -> Result<(String, Vec<u32>, Vec<u32>, usize)> {
            let mut parts = Vec::with_capacity(2);
            if input.has_image {
                parts.push(Part::Image);
            }
            parts.push(Part::text(user_text(question, &options, ind)));
            let mut messages = Vec::with_capacity(2);
            if !self.config.system.trim().is_empty() {
                messages.push(Message::parts(
                    "system",
                    vec![Part::text(self.config.system.clone())],
                ));
            }
            messages.push(Message::parts("user", parts));
            let (text, enc) = self.processor.apply_chat_template(&messages, true)?;
            Ok((text, enc.input_ids, enc.token_type_ids, enc.num_images))
        };

        let max = self.config.max_prompt_length;
        let mut truncated = false;
        let mut built = render(indication.as_deref())?;
        if built.1.len() > max {
            match (self.config.on_too_long, indication.as_deref()) {
                (OnTooLong::Reject, _) => {
                    return Err(Rejection::TooLong {
                        tokens: built.1.len(),
                        max,
                        hint: " (on_too_long: reject)",
                    }
                    .into());
                }
                (OnTooLong::Truncate, None) => {
                    return Err(Rejection::TooLong {
                        tokens: built.1.len(),
                        max,
                        hint: " without any clinical context; the system prompt, question \
                               and options are never cut",
                    }
                    .into());
                }
                (OnTooLong::Truncate, Some(ind)) => {
                    built = self.fit_indication(ind, max, &render)?;
                    truncated = true;
                }
            }
        }
        let (text, input_ids, token_type_ids, num_images) = built;
        Ok(BuiltPrompt {
            id: input.id.clone(),
            text,
            input_ids,
            token_type_ids,
            num_images,
            options,
            correct_letter: correct,
            truncated,
        })
    }

    /// Drop words from the left of the indication (marked with a leading `…`) until the prompt
    /// fits; without any indication left the record is rejected, since the question and
    /// options are never cut. Binary search over the number of words kept.
    #[allow(clippy::type_complexity)]
    fn fit_indication(
        &self,
        indication: &str,
        max: usize,
        render: &dyn Fn(Option<&str>) -> Result<(String, Vec<u32>, Vec<u32>, usize)>,
    ) -> Result<(String, Vec<u32>, Vec<u32>, usize)> {
        let words: Vec<&str> = indication.split_whitespace().collect();
        let shortened = |keep: usize| format!("…{}", words[words.len() - keep..].join(" "));
        // Largest `keep` (< all words, which is already too long) whose prompt fits.
        let (mut lo, mut hi) = (0usize, words.len().saturating_sub(1));
        let mut best = None;
        while lo <= hi && hi > 0 {
            let mid = (lo + hi).div_ceil(2);
            let r = render(Some(&shortened(mid)))?;
            if r.1.len() <= max {
                best = Some(r);
                lo = mid + 1;
            } else {
                hi = mid - 1;
            }
        }
        if let Some(r) = best {
            return Ok(r);
        }
        let bare = render(None)?;
        if bare.1.len() <= max {
            return Ok(bare);
        }
        Err(Rejection::TooLong {
            tokens: bare.1.len(),
            max,
            hint: " even without the clinical context; the system prompt, question and \
                   options are never cut",
        }
        .into())
    }
}

/// Prompt length statistics and rejection counts over a run, shared by all workers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptStats {
    /// Prompts built.
    pub built: u64,
    /// Built prompts whose indication was shortened.
    pub truncated: u64,
    /// Rejected records by [`Rejection::kind`] (`other` for tokenizer/template errors).
    pub rejected: BTreeMap<String, u64>,
    /// Shortest built prompt in tokens.
    pub min_tokens: Option<usize>,
    /// Longest built prompt in tokens.
    pub max_tokens: Option<usize>,
    /// Sum of built prompt lengths (for the mean).
    pub sum_tokens: u64,
}

impl PromptStats {
    /// Count one built prompt.
    pub fn record_built(&mut self, p: &BuiltPrompt) {
        let n = p.len();
        self.built += 1;
        self.truncated += u64::from(p.truncated);
        self.sum_tokens += n as u64;
        self.min_tokens = Some(self.min_tokens.map_or(n, |m| m.min(n)));
        self.max_tokens = Some(self.max_tokens.map_or(n, |m| m.max(n)));
    }

    /// Count one rejected record from its error.
    pub fn record_error(&mut self, e: &anyhow::Error) {
        let kind = e
            .downcast_ref::<Rejection>()
            .map_or("other", Rejection::kind);
        *self.rejected.entry(kind.to_owned()).or_default() += 1;
    }

    /// Mean prompt length in tokens.
    pub fn mean_tokens(&self) -> Option<f64> {
        (self.built > 0).then(|| self.sum_tokens as f64 / self.built as f64)
    }

    /// Records rejected, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

impl std::fmt::Display for PromptStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "prompts: {} built", self.built)?;
        if let (Some(min), Some(mean), Some(max)) =
            (self.min_tokens, self.mean_tokens(), self.max_tokens)
        {
            write!(f, ", tokens min/mean/max {min}/{mean:.1}/{max}")?;
        }
        write!(f, ", {} truncated", self.truncated)?;
        write!(f, ", {} rejected", self.rejected_total())?;
        if !self.rejected.is_empty() {
            let parts: Vec<String> = self
                .rejected
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// An item of the prompt stage: the record's prompt fields plus whatever travels with it
/// (pixels, the full record for the reward scorer), passed through untouched.
#[derive(Debug, Clone)]
pub struct PromptItem<P> {
    /// What the builder reads.
    pub input: PromptInput,
    /// Carried along.
    pub payload: P,
}

/// The prompt stage's output.
#[derive(Debug, Clone)]
pub struct PromptedItem<P> {
    /// The built prompt.
    pub prompt: BuiltPrompt,
    /// Carried along from the input.
    pub payload: P,
}

/// The prompt builder as a pipeline stage. Rejections are returned as errors, so the runtime
/// skips and records them (or aborts, per `on_bad_item`); every outcome also lands in the
/// shared [`PromptStats`].
pub struct PromptStage<P> {
    builder: Arc<PromptBuilder>,
    stats: Arc<Mutex<PromptStats>>,
    _payload: std::marker::PhantomData<fn(P) -> P>,
}

impl<P> PromptStage<P> {
    /// A stage instance; give every worker the same `builder` and `stats`.
    pub fn new(builder: Arc<PromptBuilder>, stats: Arc<Mutex<PromptStats>>) -> Self {
        Self {
            builder,
            stats,
            _payload: std::marker::PhantomData,
        }
    }
}

impl<P: Send + 'static> Stage for PromptStage<P> {
    type In = PromptItem<P>;
    type Out = PromptedItem<P>;

    fn process(&mut self, _seq: u64, item: Self::In) -> Result<Option<Self::Out>> {
        let result = self.builder.build(&item.input);
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(prompt) => {
                stats.record_built(&prompt);
                Ok(Some(PromptedItem {
                    prompt,
                    payload: item.payload,
                }))
            }
            Err(e) => {
                stats.record_error(&e);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;

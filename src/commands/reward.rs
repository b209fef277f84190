//! `medgrpo reward`: scores completions produced anywhere (this model, vLLM, an API) against
//! a dataset's answers with exactly the training reward, and `medgrpo bench reward`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::clip::{clip, clip_message, clip_quoted};
use crate::config::{Config, RewardsConfig};
use crate::grpo::reward::{COMPONENT_NAMES, Reference, RewardBreakdown, score};

/// Arguments of `medgrpo reward`.
#[derive(Debug, Args)]
#[command(
    after_help = "Each input line is {\"id\": <question id>, \"completion\": <text>}; each output line has every reward component and the total.\nExample:\n  medgrpo reward --data test.json --completions out.jsonl --config pipelines/train.yaml --out scores.jsonl"
)]
pub struct RewardArgs {
    /// Dataset JSON: an object keyed by question id (fields correct_answer,
    /// correct_answer_explanation, Findings, Impression).
    #[arg(long)]
    pub data: PathBuf,
    /// JSONL file of completions, one `{"id": ..., "completion": ...}` per line.
    #[arg(long)]
    pub completions: PathBuf,
    /// Pipeline YAML whose `rewards` section (weights, character limit) to use; the
    /// defaults otherwise.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to write the scores (JSONL); standard output otherwise.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit 0 even when no line could be scored (by default that is an error: every line
    /// skipped usually means the wrong dataset or a broken completions file).
    #[arg(long)]
    pub allow_empty: bool,
}

/// Runs the subcommand: scores every line, writes one JSON line per scored completion,
/// reports skipped lines and a summary on stderr.
pub fn run(args: RewardArgs) -> Result<()> {
    let cfg = match &args.config {
        Some(p) => Config::load(p, &[])?.rewards,
        None => RewardsConfig::default(),
    };
    let text = std::fs::read_to_string(&args.data)
        .with_context(|| format!("cannot read dataset {}", args.data.display()))?;
    let mut answers =
        Answers::from_json(&text).with_context(|| format!("dataset {}", args.data.display()))?;
    let input = std::fs::File::open(&args.completions)
        .with_context(|| format!("cannot read completions {}", args.completions.display()))?;
    let out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(out);
    let summary = score_jsonl(
        &mut answers,
        BufReader::new(input),
        &mut out,
        &cfg,
        |line, why| eprintln!("{}:{line}: {why}; skipped", args.completions.display()),
    )?;
    out.flush().context("cannot write the scores")?;
    eprint!("{}", summary.render());
    if summary.scored == 0 && !args.allow_empty {
        bail!(
            "no completion could be scored: {} line(s) skipped (reasons above); --allow-empty accepts this",
            summary.skipped.len()
        );
    }
    Ok(())
}

/// The fields of a dataset record this command needs (the rest is ignored).
#[derive(Debug, Deserialize)]
struct RawRecord {
    correct_answer: Option<serde_json::Value>,
    correct_answer_explanation: Option<String>,
    #[serde(rename = "Findings")]
    findings: Option<String>,
    #[serde(rename = "Impression")]
    impression: Option<String>,
}

/// A dataset's answer keys by question id, each prepared on first use (a 600k-question
/// dataset scored on a few thousand completions prepares only the questions it meets).
pub struct Answers {
    raw: HashMap<String, RawRecord>,
    prepared: HashMap<String, Result<Arc<Reference>, String>>,
}

impl Answers {
    /// Parses the dataset JSON (an object keyed by question id); errors name the record and
    /// field. A question id given twice is an error: a JSON object would keep the last copy
    /// silently, and which answer to score against would be a guess.
    pub fn from_json(text: &str) -> Result<Answers> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let raw = de
            .deserialize_map(UniqueRecords)
            .map_err(|e| anyhow::anyhow!(clip_message(&e.to_string())))?;
        de.end().context("text after the top-level object")?;
        Ok(Answers {
            raw,
            prepared: HashMap::new(),
        })
    }

    /// The answer key of `id`, or why there is none (unknown id, bad correct_answer).
    pub fn get(&mut self, id: &str) -> Result<Arc<Reference>, String> {
        if let Some(r) = self.prepared.get(id) {
            return r.clone();
        }
        let r = match self.raw.get(id) {
            None => Err(format!("unknown question id {}", clip_quoted(id))),
            Some(rec) => prepare(rec).map_err(|e| format!("question {}: {e:#}", clip_quoted(id))),
        };
        self.prepared.insert(id.to_owned(), r.clone());
        r
    }
}

fn prepare(rec: &RawRecord) -> Result<Arc<Reference>> {
    let letter = match &rec.correct_answer {
        Some(serde_json::Value::String(s)) => {
            let s = s.trim();
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => c,
                _ => bail!("correct_answer {} is not a single letter", clip_quoted(s)),
            }
        }
        Some(v) => bail!("correct_answer {} is not a string", clip(&v.to_string())),
        None => bail!("no correct_answer"),
    };
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    Ok(Arc::new(Reference::new(
        letter,
        &text(&rec.correct_answer_explanation),
        &text(&rec.findings),
        &text(&rec.impression),
    )?))
}

/// The dataset object, refusing a question id given twice and naming the record at fault.
struct UniqueRecords;

impl<'de> Visitor<'de> for UniqueRecords {
    type Value = HashMap<String, RawRecord>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("one JSON object keyed by question id")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = HashMap::new();
        while let Some(id) = map.next_key::<String>()? {
            let rec: RawRecord = map.next_value().map_err(|e| {
                de::Error::custom(format!(
                    "record {}: {}",
                    clip_quoted(&id),
                    clip_message(&e.to_string())
                ))
            })?;
            if out.contains_key(&id) {
                return Err(de::Error::custom(format!(
                    "record {}: duplicate question id (the dataset gives it more than once)",
                    clip_quoted(&id)
                )));
            }
            out.insert(id, rec);
        }
        Ok(out)
    }
}

/// One input line.
#[derive(Debug, Deserialize)]
struct CompletionLine {
    id: serde_json::Value,
    completion: String,
}

/// What [`score_jsonl`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Completions scored.
    pub scored: usize,
    /// Lines skipped: (1-based line number, reason).
    pub skipped: Vec<(usize, String)>,
    /// Sum of each unweighted component, in [`COMPONENT_NAMES`] order.
    pub component_sums: [f64; 5],
    /// Sum of the weighted totals.
    pub total_sum: f64,
}

impl Summary {
    /// Mean of each component over the scored completions (NaN when none).
    pub fn component_means(&self) -> [f64; 5] {
        self.component_sums.map(|s| s / self.scored as f64)
    }

    /// Mean weighted total.
    pub fn total_mean(&self) -> f64 {
        self.total_sum / self.scored as f64
    }

    /// Share of completions with the correct single letter.
    pub fn accuracy(&self) -> f64 {
        self.component_means()[0]
    }

    /// Share of well-formed completions.
    pub fn format_rate(&self) -> f64 {
        self.component_means()[3]
    }

    /// The human summary printed on stderr.
    pub fn render(&self) -> String {
        let mut s = format!(
            "scored {} completion(s), skipped {} line(s)\n",
            self.scored,
            self.skipped.len()
        );
        if self.scored > 0 {
            for (name, m) in COMPONENT_NAMES.iter().zip(self.component_means()) {
                s += &format!("  {name:<12} mean {m:.4}\n");
            }
            s += &format!("  {:<12} mean {:.4}\n", "total", self.total_mean());
            s += &format!(
                "  accuracy {:.4}   format rate {:.4}\n",
                self.accuracy(),
                self.format_rate()
            );
        }
        s
    }
}

/// Scores a JSONL stream of `{"id", "completion"}` lines, writing one JSON line per scored
/// completion (`line`, `id`, `correct_answer`, `letter`, the five components, `total`).
/// Blank lines are ignored; malformed lines and unknown ids are passed to `on_skip` with
/// their 1-based line number and recorded in the summary. I/O errors abort.
pub fn score_jsonl(
    answers: &mut Answers,
    mut input: impl BufRead,
    mut out: impl Write,
    cfg: &RewardsConfig,
    mut on_skip: impl FnMut(usize, &str),
) -> Result<Summary> {
    let mut summary = Summary::default();
    let mut bytes = Vec::new();
    let mut line_no = 0;
    loop {
        bytes.clear();
        if input
            .read_until(b'\n', &mut bytes)
            .context("cannot read the completions")?
            == 0
        {
            break;
        }
        line_no += 1;
        let outcome = std::str::from_utf8(&bytes)
            .map_err(|e| format!("not UTF-8 ({e})"))
            .and_then(|line| {
                if line.trim().is_empty() {
                    return Ok(None);
                }
                let l: CompletionLine = serde_json::from_str(line).map_err(|e| {
                    format!(
                        "malformed line, expected {{\"id\", \"completion\"}}: {}",
                        clip_message(&e.to_string())
                    )
                })?;
                let id = match l.id {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    v => {
                        return Err(format!(
                            "id {} is neither a string nor a number",
                            clip(&v.to_string())
                        ));
                    }
                };
                let reference = answers.get(&id)?;
                Ok(Some((id, reference, l.completion)))
            });
        let (id, reference, completion) = match outcome {
            Ok(None) => continue,
            Ok(Some(x)) => x,
            Err(why) => {
                on_skip(line_no, &why);
                summary.skipped.push((line_no, why));
                continue;
            }
        };
        let b = score(&completion, &reference, cfg);
        write_score(&mut out, line_no, &id, reference.correct_answer, &b)
            .context("cannot write the scores")?;
        summary.scored += 1;
        for (s, c) in summary.component_sums.iter_mut().zip(b.components()) {
            *s += c;
        }
        summary.total_sum += b.total;
    }
    Ok(summary)
}

fn write_score(
    out: &mut impl Write,
    line: usize,
    id: &str,
    correct_answer: char,
    b: &RewardBreakdown,
) -> Result<()> {
    let v = serde_json::json!({
        "line": line,
        "id": id,
        "correct_answer": correct_answer.to_string(),
        "letter": b.letter.map(|c| c.to_string()),
        "correct": b.correct,
        "explanation": b.explanation,
        "evidence": b.evidence,
        "format": b.format,
        "conciseness": b.conciseness,
        "total": b.total,
    });
    serde_json::to_writer(&mut *out, &v)?;
    out.write_all(b"\n")?;
    Ok(())
}

#[cfg(test)]
mod tests;

//! The dataset reader: a ReXVQA-style JSON split (one big object keyed by question id)
//! parsed one record at a time, validated, with image paths resolved.
//!
//! The file is memory-mapped and walked with a serde `MapAccess` visitor, so only one record
//! is materialised at a time: a 700k-question split needs its own (page-cache, reclaimable)
//! mapping plus one record, not a `serde_json::Value` tree many times its size.

use std::collections::HashSet;
use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::paths::{ImagePaths, PathResolver};
use super::pylist::parse_py_str_list;
use crate::clip::{clip, clip_quoted};
use crate::config::{DataConfig, OnBadItem};

/// One multiple-choice question: what the prompt builder, the rewards and eval need.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The question id (the key of the top-level object).
    pub id: String,
    /// Question text.
    pub question: String,
    /// Options exactly as given, e.g. `"A. Pneumothorax"`.
    pub options: Vec<String>,
    /// The correct option letter, upper case (`"A"`).
    pub correct_answer: String,
    /// `correct_answer_explanation` (empty when absent): the explanation reward's reference.
    pub explanation: String,
    /// Image paths as given in the JSON; empty for a text-only question (no `ImagePath`).
    pub image_paths_raw: Vec<String>,
    /// Image paths resolved against `data.image_root` (or the JSON's directory), absolute,
    /// each inside an allowed root (see [`super::paths`]).
    pub image_paths: Vec<PathBuf>,
    /// Shard keys of the images (each resolved path relative to the key anchor).
    pub image_keys: Vec<String>,
    /// `ImageViewPosition`, parallel to the images (empty when absent).
    pub view_positions: Vec<String>,
    /// `Indication` (clinical context; optional in the prompt).
    pub indication: Option<String>,
    /// `Findings` of the report.
    pub findings: Option<String>,
    /// `Impression` of the report.
    pub impression: Option<String>,
    /// Every other field (`task_name`, `category`, `subcategory`, `study_id`, …), kept in
    /// file order so eval can report per category.
    pub extra: Map<String, Value>,
}

impl Record {
    /// Whether the question comes without an image (no `ImagePath`).
    pub fn is_text_only(&self) -> bool {
        self.image_paths_raw.is_empty()
    }

    /// Index of the correct option in `options` (0 for `A`).
    pub fn correct_index(&self) -> usize {
        (self.correct_answer.as_bytes()[0] - b'A') as usize
    }
}

/// A record that failed validation: which question, which field, why. Its `Display` is the
/// documented error text (`question <id>: field `<field>`: <reason>`), with a long id clipped;
/// reasons never echo a value whole.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordError {
    /// Question id.
    pub id: String,
    /// JSON field at fault (`<record>` when the record itself is not an object).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "question {}: field `{}`: {}",
            clip(&self.id),
            self.field,
            self.reason
        )
    }
}

impl std::error::Error for RecordError {}

fn err(id: &str, field: &str, reason: impl Into<String>) -> RecordError {
    RecordError {
        id: id.to_string(),
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// A list of strings, given either as a JSON array or as a stringified Python list.
fn str_list(id: &str, field: &str, v: Value) -> Result<Vec<String>, RecordError> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, it)| match it {
                Value::String(s) => Ok(s),
                other => Err(err(
                    id,
                    field,
                    format!("item {i} is {}, expected a string", kind(&other)),
                )),
            })
            .collect(),
        Value::String(s) => parse_py_str_list(&s).map_err(|r| err(id, field, r)),
        other => Err(err(
            id,
            field,
            format!("is {}, expected a list of strings", kind(&other)),
        )),
    }
}

fn opt_str(id: &str, field: &str, v: Option<Value>) -> Result<Option<String>, RecordError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(err(
            id,
            field,
            format!("is {}, expected a string", kind(&other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Validates one record and resolves its image paths. The documented errors, each naming
/// the question id and the field:
/// - `<record>`: not a JSON object;
/// - `question`: missing, not a string or empty;
/// - `options`: missing, not a list of strings (JSON or Python-literal), fewer than 2 items;
/// - `correct_answer`: missing, not a single letter, or a letter with no option;
/// - `ImagePath`: not a list of strings, an empty list, an empty path, or a path outside the
///   allowed image folders (see [`super::paths`]). A record without `ImagePath` (or with
///   `null`) is a text-only question: it trains text-only models, and the training loader
///   refuses it for a vision model;
/// - `ImageViewPosition`: not a list of strings or not as long as `ImagePath`;
/// - `correct_answer_explanation`, `Indication`, `Findings`, `Impression`: not a string/null.
pub fn parse_record(id: &str, value: Value, paths: &PathResolver) -> Result<Record, RecordError> {
    let mut obj = match value {
        Value::Object(m) => m,
        other => {
            return Err(err(
                id,
                "<record>",
                format!("is {}, expected an object", kind(&other)),
            ));
        }
    };
    let question = question(id, obj.shift_remove("question"))?;
    let options = options(id, obj.shift_remove("options"))?;
    let correct_answer = correct_answer(id, obj.shift_remove("correct_answer"), options.len())?;
    let explanation = opt_str(
        id,
        "correct_answer_explanation",
        obj.shift_remove("correct_answer_explanation"),
    )?
    .unwrap_or_default();
    let image_paths_raw = image_paths(id, obj.shift_remove("ImagePath"))?;
    let view_positions = view_positions(
        id,
        obj.shift_remove("ImageViewPosition"),
        image_paths_raw.len(),
    )?;
    let indication = opt_str(id, "Indication", obj.shift_remove("Indication"))?;
    let findings = opt_str(id, "Findings", obj.shift_remove("Findings"))?;
    let impression = opt_str(id, "Impression", obj.shift_remove("Impression"))?;
    let mut image_paths = Vec::with_capacity(image_paths_raw.len());
    let mut image_keys = Vec::with_capacity(image_paths_raw.len());
    for (i, given) in image_paths_raw.iter().enumerate() {
        let r = paths
            .resolve(given)
            .map_err(|why| err(id, "ImagePath", format!("item {i}: {why}")))?;
        image_paths.push(r.path);
        image_keys.push(r.key);
    }
    Ok(Record {
        id: id.to_string(),
        question,
        options,
        correct_answer,
        explanation,
        image_paths_raw,
        image_paths,
        image_keys,
        view_positions,
        indication,
        findings,
        impression,
        extra: obj,
    })
}

fn question(id: &str, v: Option<Value>) -> Result<String, RecordError> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(err(id, "question", "is empty")),
        Some(other) => Err(err(
            id,
            "question",
            format!("is {}, expected a string", kind(&other)),
        )),
        None => Err(err(id, "question", "is missing")),
    }
}

fn options(id: &str, v: Option<Value>) -> Result<Vec<String>, RecordError> {
    let options = match v {
        Some(v) => str_list(id, "options", v)?,
        None => return Err(err(id, "options", "is missing")),
    };
    if options.len() < 2 {
        return Err(err(
            id,
            "options",
            format!("has {} item(s), a question needs at least 2", options.len()),
        ));
    }
    Ok(options)
}

/// The upper-case letter of an existing option.
fn correct_answer(id: &str, v: Option<Value>, n_options: usize) -> Result<String, RecordError> {
    let letter = match v {
        Some(Value::String(s)) => normalize_letter(&s).ok_or_else(|| {
            err(
                id,
                "correct_answer",
                format!("{} is not an option letter (A, B, …)", clip_quoted(&s)),
            )
        })?,
        Some(other) => {
            return Err(err(
                id,
                "correct_answer",
                format!("is {}, expected a letter", kind(&other)),
            ));
        }
        None => return Err(err(id, "correct_answer", "is missing")),
    };
    if (letter.as_bytes()[0] - b'A') as usize >= n_options {
        return Err(err(
            id,
            "correct_answer",
            format!("is {letter} but there are only {n_options} options"),
        ));
    }
    Ok(letter)
}

/// The given image paths; none for a text-only question.
fn image_paths(id: &str, v: Option<Value>) -> Result<Vec<String>, RecordError> {
    let paths = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v) => str_list(id, "ImagePath", v)?,
    };
    if paths.is_empty() {
        // An explicit empty list is a broken image field, not a text-only question.
        return Err(err(id, "ImagePath", "is an empty list"));
    }
    if let Some(i) = paths.iter().position(|p| p.trim().is_empty()) {
        return Err(err(id, "ImagePath", format!("item {i} is an empty path")));
    }
    Ok(paths)
}

fn view_positions(id: &str, v: Option<Value>, n_images: usize) -> Result<Vec<String>, RecordError> {
    let vp = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v) => str_list(id, "ImageViewPosition", v)?,
    };
    if vp.len() != n_images {
        return Err(err(
            id,
            "ImageViewPosition",
            format!("has {} item(s) but ImagePath has {n_images}", vp.len()),
        ));
    }
    Ok(vp)
}

/// `"a"`, `"B"`, `"C."`, `"D)"` → the upper-case letter; anything else → None.
fn normalize_letter(s: &str) -> Option<String> {
    let t = s.trim();
    let mut chars = t.chars();
    let c = chars.next()?;
    let rest = chars.as_str().trim();
    if !c.is_ascii_alphabetic() || !(rest.is_empty() || rest == "." || rest == ")") {
        return None;
    }
    Some(c.to_ascii_uppercase().to_string())
}

const STOP: &str = "\u{0}medgrpo-stop";

struct TopVisitor<'f, F> {
    f: &'f mut F,
}

impl<'de, F> Visitor<'de> for TopVisitor<'_, F>
where
    F: FnMut(String, Value) -> ControlFlow<()>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("one JSON object keyed by question id")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let value: Value = map.next_value()?;
            if (self.f)(key, value).is_break() {
                return Err(de::Error::custom(STOP));
            }
        }
        Ok(())
    }
}

/// Walks the top-level object of a split, calling `f(id, value)` for each question in file
/// order without building the whole tree; `f` may stop early with `Break`. A syntax error
/// is fatal (the rest of the file cannot be trusted) and names the file, line and column.
pub fn for_each_raw(
    path: &Path,
    mut f: impl FnMut(String, Value) -> ControlFlow<()>,
) -> Result<()> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open dataset {}", path.display()))?;
    // SAFETY: the mapping is read-only; a dataset file modified while we read it would give
    // a parse error, not memory unsafety in safe code that only reads bytes.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("cannot map dataset {}", path.display()))?;
    let mut de = serde_json::Deserializer::from_slice(&map);
    match de.deserialize_map(TopVisitor { f: &mut f }) {
        Ok(()) => de.end().with_context(|| {
            format!(
                "dataset {}: text after the top-level object",
                path.display()
            )
        }),
        Err(e) if e.to_string().starts_with(STOP) => Ok(()),
        Err(e) => Err(anyhow::anyhow!(e))
            .with_context(|| format!("dataset {} is not valid JSON", path.display())),
    }
}

/// The question ids of one file met so far, as 128-bit digests (16 bytes per question
/// instead of the id itself; a collision is astronomically unlikely).
#[derive(Default)]
struct SeenIds(HashSet<u128>);

impl SeenIds {
    /// Whether `id` is new (and records it).
    fn insert(&mut self, id: &str) -> bool {
        let d = Sha256::digest(id.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&d[..16]);
        self.0.insert(u128::from_le_bytes(first))
    }
}

/// Walks a split's records in file order, each validated with [`parse_record`]. A question
/// id met a second time (a duplicate JSON key, which a JSON object would silently collapse
/// to its last copy) is a bad record (field `<id>`); the first copy is the one kept.
pub fn for_each_record(
    path: &Path,
    rules: &ImagePaths,
    mut f: impl FnMut(Result<Record, RecordError>) -> ControlFlow<()>,
) -> Result<()> {
    let resolver = rules.resolver(path);
    let mut seen = SeenIds::default();
    for_each_raw(path, |id, v| {
        f(if seen.insert(&id) {
            parse_record(&id, v, &resolver)
        } else {
            Err(err(
                &id,
                "<id>",
                "duplicate question id: an earlier record of this file has the same id (the first is kept)",
            ))
        })
    })
}

/// Calls `f` with every valid record of a split, applying `on_bad_item` to the others: with
/// `Skip` they are appended to `rejected`, with `Abort` the first one is the error.
pub fn for_each_valid(
    path: &Path,
    rules: &ImagePaths,
    on_bad_item: OnBadItem,
    rejected: &mut Vec<RecordError>,
    mut f: impl FnMut(Record),
) -> Result<()> {
    let mut fatal = None;
    for_each_record(path, rules, |r| match r {
        Ok(r) => {
            f(r);
            ControlFlow::Continue(())
        }
        Err(e) if on_bad_item == OnBadItem::Skip => {
            rejected.push(e);
            ControlFlow::Continue(())
        }
        Err(e) => {
            fatal = Some(e);
            ControlFlow::Break(())
        }
    })?;
    match fatal {
        Some(e) => Err(anyhow::Error::new(e).context(format!(
            "bad record in {} (data.on_bad_item is abort)",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// Streams validated records in file order: `Ok(Ok(record))`, `Ok(Err(bad record))`, or a
/// final `Err` on a fatal parse error. Parsing runs on a helper thread that stays at most
/// `buffer` records ahead, so memory stays bounded and the consumer may stop at any time.
pub fn stream_records(
    path: &Path,
    data: &DataConfig,
    buffer: usize,
) -> impl Iterator<Item = Result<Result<Record, RecordError>>> + Send + 'static {
    let (tx, rx) = crossbeam_channel::bounded(buffer.max(1));
    let path = path.to_path_buf();
    let rules = ImagePaths::from_config(data);
    std::thread::spawn(move || {
        let res = for_each_record(&path, &rules, |r| {
            if tx.send(Ok(r)).is_err() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if let Err(e) = res {
            let _ = tx.send(Err(e));
        }
    });
    rx.into_iter()
}

/// A split read with the bad-record policy applied.
#[derive(Debug, Default)]
pub struct LoadedSplit {
    /// Valid records in file order.
    pub records: Vec<Record>,
    /// Records dropped under `on_bad_item: skip`, with their reasons.
    pub rejected: Vec<RecordError>,
}

/// Reads a whole split of `data` (its image folders and `on_bad_item`): with `Skip` a bad
/// record is dropped and listed in `rejected`, with `Abort` the first bad record is the error.
pub fn load_split(path: &Path, data: &DataConfig) -> Result<LoadedSplit> {
    let rules = ImagePaths::from_config(data);
    let mut out = LoadedSplit::default();
    let records = &mut out.records;
    for_each_valid(path, &rules, data.on_bad_item, &mut out.rejected, |r| {
        records.push(r)
    })?;
    Ok(out)
}

/// Writes dropped records as JSON lines (`{"id", "field", "reason"}`), so skipping is never
/// silent.
pub fn write_rejects(path: &Path, rejected: &[RecordError]) -> Result<()> {
    let mut text = String::new();
    for r in rejected {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests;

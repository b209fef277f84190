//! The dataset reader: a ReXVQA-style JSON split (one big object keyed by question id)
//! parsed one record at a time, validated, with image paths resolved.
//!
//! The file is memory-mapped and walked with a serde `MapAccess` visitor, so only one record
//! is materialised at a time: a 700k-question split needs its own (page-cache, reclaimable)
//! mapping plus one record, not a `serde_json::Value` tree many times its size.

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::pylist::parse_py_str_list;
use crate::config::OnBadItem;

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
    /// Image paths resolved against `data.image_root` (or the JSON's directory).
    pub image_paths: Vec<PathBuf>,
    /// Shard keys of the images ([`image_key`] of each given path).
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
/// documented error text (`question <id>: field `<field>`: <reason>`).
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
            self.id, self.field, self.reason
        )
    }
}

impl std::error::Error for RecordError {}

/// Where relative image paths are resolved.
#[derive(Debug, Clone)]
pub struct PathResolver {
    root: PathBuf,
}

impl PathResolver {
    /// Relative paths resolve against `image_root`, or against the JSON file's directory
    /// when no root is configured (so a self-contained dataset folder just works).
    pub fn new(image_root: Option<&Path>, json_path: &Path) -> Self {
        let root = match image_root {
            Some(r) => r.to_path_buf(),
            None => json_path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        Self { root }
    }

    /// The file a given path names, lexically normalised (`a/../b` → `b`).
    pub fn resolve(&self, given: &str) -> PathBuf {
        let p = Path::new(given);
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        };
        normalize(&joined)
    }
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The shard key of an image: the given path, lexically normalised, without leading `/`,
/// `./` or `../` components (ReXVQA's `../deid_png/p1/s1/x.png` → `deid_png/p1/s1/x.png`).
/// Keys are stable across machines whatever `image_root` is.
pub fn image_key(given: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in given.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

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
/// - `ImagePath`: not a list of strings, an empty list, or an empty path. A record without
///   `ImagePath` (or with `null`) is a text-only question: it trains text-only models, and the
///   training loader refuses it for a vision model;
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
    let question = match obj.shift_remove("question") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::String(_)) => return Err(err(id, "question", "is empty")),
        Some(other) => {
            return Err(err(
                id,
                "question",
                format!("is {}, expected a string", kind(&other)),
            ));
        }
        None => return Err(err(id, "question", "is missing")),
    };
    let options = match obj.shift_remove("options") {
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
    let correct_answer = match obj.shift_remove("correct_answer") {
        Some(Value::String(s)) => normalize_letter(&s).ok_or_else(|| {
            err(
                id,
                "correct_answer",
                format!("{s:?} is not an option letter (A, B, …)"),
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
    let idx = (correct_answer.as_bytes()[0] - b'A') as usize;
    if idx >= options.len() {
        return Err(err(
            id,
            "correct_answer",
            format!(
                "is {correct_answer} but there are only {} options",
                options.len()
            ),
        ));
    }
    let explanation = opt_str(
        id,
        "correct_answer_explanation",
        obj.shift_remove("correct_answer_explanation"),
    )?
    .unwrap_or_default();
    let image_paths_raw = match obj.shift_remove("ImagePath") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => {
            let paths = str_list(id, "ImagePath", v)?;
            if paths.is_empty() {
                // An explicit empty list is a broken image field, not a text-only question.
                return Err(err(id, "ImagePath", "is an empty list"));
            }
            paths
        }
    };
    if let Some(i) = image_paths_raw.iter().position(|p| p.trim().is_empty()) {
        return Err(err(id, "ImagePath", format!("item {i} is an empty path")));
    }
    let view_positions = match obj.shift_remove("ImageViewPosition") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => {
            let vp = str_list(id, "ImageViewPosition", v)?;
            if vp.len() != image_paths_raw.len() {
                return Err(err(
                    id,
                    "ImageViewPosition",
                    format!(
                        "has {} item(s) but ImagePath has {}",
                        vp.len(),
                        image_paths_raw.len()
                    ),
                ));
            }
            vp
        }
    };
    let indication = opt_str(id, "Indication", obj.shift_remove("Indication"))?;
    let findings = opt_str(id, "Findings", obj.shift_remove("Findings"))?;
    let impression = opt_str(id, "Impression", obj.shift_remove("Impression"))?;
    let image_paths = image_paths_raw.iter().map(|p| paths.resolve(p)).collect();
    let image_keys = image_paths_raw.iter().map(|p| image_key(p)).collect();
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

/// Streams validated records in file order: `Ok(Ok(record))`, `Ok(Err(bad record))`, or a
/// final `Err` on a fatal parse error. Parsing runs on a helper thread that stays at most
/// `buffer` records ahead, so memory stays bounded and the consumer may stop at any time.
pub fn stream_records(
    path: &Path,
    image_root: Option<&Path>,
    buffer: usize,
) -> impl Iterator<Item = Result<Result<Record, RecordError>>> + Send + 'static {
    let (tx, rx) = crossbeam_channel::bounded(buffer.max(1));
    let path = path.to_path_buf();
    let resolver = PathResolver::new(image_root, &path);
    std::thread::spawn(move || {
        let res = for_each_raw(&path, |id, v| {
            let r = parse_record(&id, v, &resolver);
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

/// Reads a whole split: with `Skip` a bad record is dropped and listed in `rejected`, with
/// `Abort` the first bad record is the error.
pub fn load_split(
    path: &Path,
    image_root: Option<&Path>,
    on_bad_item: OnBadItem,
) -> Result<LoadedSplit> {
    let resolver = PathResolver::new(image_root, path);
    let mut out = LoadedSplit::default();
    let mut fatal: Option<RecordError> = None;
    for_each_raw(path, |id, v| match parse_record(&id, v, &resolver) {
        Ok(r) => {
            out.records.push(r);
            ControlFlow::Continue(())
        }
        Err(e) => match on_bad_item {
            OnBadItem::Skip => {
                out.rejected.push(e);
                ControlFlow::Continue(())
            }
            OnBadItem::Abort => {
                fatal = Some(e);
                ControlFlow::Break(())
            }
        },
    })?;
    if let Some(e) = fatal {
        return Err(anyhow::Error::new(e).context(format!(
            "bad record in {} (data.on_bad_item is abort)",
            path.display()
        )));
    }
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

//! `--set a.b=c`: edits the YAML tree before it is typed, so an override goes through
//! exactly the same parsing and validation as the file itself.

use anyhow::{Result, bail};
use serde_norway::{Mapping, Value};

use crate::clip::clip;

/// Sets `key.path=value` in a YAML tree; the value is parsed as YAML (so `3` is a number,
/// `[a, b]` a list, `true` a bool). Missing intermediate maps are created; a typo then
/// surfaces as an unknown-field error naming the path.
pub fn apply_override(root: &mut Value, assignment: &str) -> Result<()> {
    let Some((path, raw)) = assignment.split_once('=') else {
        bail!(
            "override `{}` must look like key.path=value",
            clip(assignment)
        );
    };
    let path = path.trim();
    if path.is_empty() || path.split('.').any(str::is_empty) {
        bail!("override `{}` has an empty key", clip(assignment));
    }
    let value: Value =
        serde_norway::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let keys: Vec<&str> = path.split('.').collect();
    let mut node = root;
    for (i, key) in keys.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else {
            bail!(
                "override `{}`: `{}` is not a section",
                clip(assignment),
                clip(&keys[..i].join("."))
            );
        };
        let k = Value::String((*key).to_string());
        if i + 1 == keys.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map.entry(k).or_insert(Value::Null);
    }
    unreachable!("the loop returns at the last key")
}

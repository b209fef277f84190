//! Which Linear layers get an adapter, by PEFT's rules (ref: peft
//! `tuners_utils.check_target_module_exists`): `target_modules` as a list matches a module whose
//! full name equals an entry or ends with `.entry`; as a string it is a regex that must match the
//! whole name (`re.fullmatch`), except `"all-linear"` which means every Linear. `exclude_modules`
//! (list or regex, same rules) removes matches. Names are the transformers ≥ 4.52 module paths,
//! e.g. `model.language_model.layers.3.self_attn.q_proj`.

use anyhow::{Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::clip::clip_quoted;

/// The projections LoRA targets by default (the language model's attention and MLP).
pub const DEFAULT_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The `exclude_modules` regex that keeps the vision tower frozen (so its output can be computed
/// once per prompt); written into `adapter_config.json` so PEFT selects the same layers.
pub const EXCLUDE_VISION: &str = ".*vision_tower.*";

/// PEFT's `target_modules` / `exclude_modules`: a list of suffixes or one regex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModuleMatch {
    /// Names or name suffixes (`q_proj` matches `...self_attn.q_proj`).
    List(Vec<String>),
    /// A regex matched against the whole module name, or `"all-linear"`.
    Regex(String),
}

impl ModuleMatch {
    fn compile(&self) -> Result<Compiled> {
        Ok(match self {
            Self::List(v) => Compiled::List(v.clone()),
            Self::Regex(s) if s.eq_ignore_ascii_case("all-linear") => Compiled::All,
            Self::Regex(s) => Compiled::Regex(
                Regex::new(&format!("^(?:{s})$"))
                    .with_context(|| format!("bad module regex {}", clip_quoted(s)))?,
                s.clone(),
            ),
        })
    }
}

enum Compiled {
    List(Vec<String>),
    /// The anchored regex and the pattern as written.
    Regex(Regex, String),
    All,
}

impl Compiled {
    fn matches(&self, name: &str) -> bool {
        match self {
            Self::List(v) => v.iter().any(|t| {
                name == t
                    || (name.ends_with(t.as_str()) && name[..name.len() - t.len()].ends_with('.'))
            }),
            Self::Regex(r, _) => r.is_match(name),
            Self::All => true,
        }
    }
}

/// A compiled target selection.
pub struct TargetSelector {
    targets: Compiled,
    exclude: Option<Compiled>,
}

impl TargetSelector {
    /// Compiles `target_modules` and optional `exclude_modules`.
    pub fn new(targets: &ModuleMatch, exclude: Option<&ModuleMatch>) -> Result<Self> {
        Ok(Self {
            targets: targets.compile()?,
            exclude: exclude.map(ModuleMatch::compile).transpose()?,
        })
    }

    /// Medgrpo's default: the seven projections, language model only unless `include_vision`
    /// (then PEFT's plain suffix rule, which also catches the SigLIP q/k/v_proj).
    pub fn default_for(include_vision: bool) -> Self {
        let (t, e) = default_match(include_vision);
        Self::new(&t, e.as_ref()).expect("static patterns compile")
    }

    /// True if the Linear called `name` gets an adapter.
    pub fn is_target(&self, name: &str) -> bool {
        if self.exclude.as_ref().is_some_and(|e| e.matches(name)) {
            return false;
        }
        self.targets.matches(name)
    }

    /// The parts of `target_modules` that select none of `names` (each list entry on its own,
    /// or the whole regex): a typo there would otherwise just leave layers without adapters.
    pub fn unmatched(&self, names: &[String]) -> Vec<String> {
        let excluded = |n: &str| self.exclude.as_ref().is_some_and(|e| e.matches(n));
        let live: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !excluded(n))
            .collect();
        match &self.targets {
            Compiled::List(entries) => entries
                .iter()
                .filter(|t| {
                    let one = Compiled::List(vec![(*t).clone()]);
                    !live.iter().any(|n| one.matches(n))
                })
                .cloned()
                .collect(),
            Compiled::Regex(r, source) if !live.iter().any(|n| r.is_match(n)) => {
                vec![source.clone()]
            }
            Compiled::All if live.is_empty() => vec!["all-linear".into()],
            _ => Vec::new(),
        }
    }

    /// The targeted names among `linear_names`, in the given order.
    pub fn select<'a>(&self, linear_names: &'a [String]) -> Vec<&'a str> {
        linear_names
            .iter()
            .filter(|n| self.is_target(n))
            .map(String::as_str)
            .collect()
    }
}

/// `(target_modules, exclude_modules)` of medgrpo's default selection, as written to
/// `adapter_config.json`.
pub fn default_match(include_vision: bool) -> (ModuleMatch, Option<ModuleMatch>) {
    let t = ModuleMatch::List(DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect());
    let e = (!include_vision).then(|| ModuleMatch::Regex(EXCLUDE_VISION.to_string()));
    (t, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_targets() -> serde_json::Value {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/lora/targets.json");
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    fn list(v: &serde_json::Value) -> Vec<String> {
        let mut out: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    }

    /// Same module set as PEFT selected on the tiny model (which has both towers).
    #[test]
    fn selection_matches_peft() {
        let j = fixture_targets();
        let all = list(&j["all_linear"]);
        let lang: Vec<String> = TargetSelector::default_for(false)
            .select(&all)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(lang, list(&j["plain"]));
        let both: Vec<String> = TargetSelector::default_for(true)
            .select(&all)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(both, list(&j["vision"]));
        let q = TargetSelector::new(
            &ModuleMatch::List(vec!["q_proj".into()]),
            Some(&ModuleMatch::Regex(EXCLUDE_VISION.into())),
        )
        .unwrap();
        let qs: Vec<String> = q.select(&all).iter().map(|s| s.to_string()).collect();
        assert_eq!(qs, list(&j["nf4"]));
    }

    #[test]
    fn suffix_needs_a_dot_and_regex_is_full_match() {
        let s = TargetSelector::new(&ModuleMatch::List(vec!["proj".into()]), None).unwrap();
        assert!(!s.is_target("model.layers.0.self_attn.q_proj"));
        assert!(s.is_target("model.proj"));
        let r = TargetSelector::new(&ModuleMatch::Regex(r".*\.q_proj".into()), None).unwrap();
        assert!(r.is_target("a.q_proj"));
        assert!(!r.is_target("a.q_proj.x"));
        let all = TargetSelector::new(&ModuleMatch::Regex("all-linear".into()), None).unwrap();
        assert!(all.is_target("anything"));
        assert!(TargetSelector::new(&ModuleMatch::Regex("(".into()), None).is_err());
    }

    /// Each list entry, or the whole regex, that selects no module is reported; modules the
    /// exclusion removes do not count as selected.
    #[test]
    fn targets_that_select_nothing_are_reported() {
        let names: Vec<String> = ["m.layers.0.self_attn.q_proj", "m.vision_tower.x.k_proj"]
            .map(String::from)
            .to_vec();
        let s = TargetSelector::new(
            &ModuleMatch::List(vec!["q_proj".into(), "k_proj".into(), "qq_proj".into()]),
            Some(&ModuleMatch::Regex(EXCLUDE_VISION.into())),
        )
        .unwrap();
        assert_eq!(s.unmatched(&names), ["k_proj", "qq_proj"]);
        let r = TargetSelector::new(&ModuleMatch::Regex(r".*\.v_proj".into()), None).unwrap();
        assert_eq!(r.unmatched(&names), [r".*\.v_proj"]);
        let all = TargetSelector::new(&ModuleMatch::Regex("all-linear".into()), None).unwrap();
        assert!(all.unmatched(&names).is_empty());
        assert_eq!(all.unmatched(&[]), ["all-linear"]);
    }
}

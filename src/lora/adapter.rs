//! PEFT adapter files: `adapter_config.json` + `adapter_model.safetensors`, read and written so
//! an adapter trained here loads in PEFT / vLLM and one trained there loads here.
//!
//! Keys (ref: peft `utils/save_and_load.py`): `base_model.model.<module path>.lora_A.weight`
//! (`[r, in]`) and `.lora_B.weight` (`[out, r]`), the adapter name removed. Module paths are the
//! transformers ≥ 4.52 ones (`model.language_model.layers.N.self_attn.q_proj`); files written by
//! older transformers (`language_model.model.layers.N...`, `vision_tower.vision_model...`,
//! `multi_modal_projector...`) are read and renamed to the new layout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::{Map, Value, json};

use super::targets::{ModuleMatch, TargetSelector};
use crate::clip::{clip, clip_message, clip_quoted};
use crate::model::lora_linear::LoraSettings;
use crate::model::weights::check_header;

/// File name of the adapter configuration.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// File name of the adapter weights.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const KEY_PREFIX: &str = "base_model.model.";

/// A predicate on a config field: true when medgrpo supports its value.
type FieldCheck = dyn Fn(&Value) -> bool;

/// The fields of PEFT's `LoraConfig` medgrpo uses; every other field read from a file is kept in
/// `extra` and written back unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    /// Rank.
    pub r: usize,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// `lora_dropout`.
    pub lora_dropout: f64,
    /// `use_rslora`.
    pub use_rslora: bool,
    /// `target_modules`.
    pub target_modules: ModuleMatch,
    /// `exclude_modules`.
    pub exclude_modules: Option<ModuleMatch>,
    /// `base_model_name_or_path`.
    pub base_model_name_or_path: Option<String>,
    /// Any other field, preserved.
    pub extra: Map<String, Value>,
}

impl AdapterConfig {
    /// A config for new adapters with these settings and targets.
    pub fn new(
        settings: &LoraSettings,
        target_modules: ModuleMatch,
        exclude_modules: Option<ModuleMatch>,
        base_model_name_or_path: Option<String>,
    ) -> Self {
        Self {
            r: settings.r,
            lora_alpha: settings.alpha,
            lora_dropout: settings.dropout,
            use_rslora: settings.use_rslora,
            target_modules,
            exclude_modules,
            base_model_name_or_path,
            extra: Map::new(),
        }
    }

    /// The layer settings this config describes.
    pub fn settings(&self) -> LoraSettings {
        LoraSettings {
            r: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            use_rslora: self.use_rslora,
        }
    }

    /// The compiled `target_modules` / `exclude_modules` selection.
    pub fn selector(&self) -> Result<TargetSelector> {
        TargetSelector::new(&self.target_modules, self.exclude_modules.as_ref())
    }

    /// Parses `adapter_config.json`, refusing PEFT features medgrpo does not implement (so an
    /// adapter never loads silently wrong). Every error names the field; a field of the wrong
    /// type is reported as such, not as missing.
    pub fn from_json(text: &str) -> Result<Self> {
        let mut m: Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| anyhow!(clip_message(&e.to_string())))
            .context("not a JSON object")?;
        let peft_type = string(&m, "peft_type")?.unwrap_or_else(|| "LORA".into());
        ensure!(
            peft_type == "LORA",
            "field `peft_type` is {}, only LORA is supported",
            clip(&peft_type)
        );
        let r = integer(&m, "r")?.context("field `r` is missing")?;
        ensure!(r >= 1, "field `r` must be at least 1 (got {r})");
        let lora_alpha = number(&m, "lora_alpha")?.context("field `lora_alpha` is missing")?;
        ensure!(
            lora_alpha.is_finite(),
            "field `lora_alpha` must be a finite number (got {lora_alpha})"
        );
        let lora_dropout = number(&m, "lora_dropout")?.unwrap_or(0.0);
        ensure!(
            (0.0..1.0).contains(&lora_dropout),
            "field `lora_dropout` must be in [0, 1) (got {lora_dropout})"
        );
        let use_rslora = boolean(&m, "use_rslora")?.unwrap_or(false);
        check_unsupported(&m)?;
        let target_modules: ModuleMatch = serde_json::from_value(
            m.get("target_modules")
                .cloned()
                .context("field `target_modules` is missing")?,
        )
        .context("field `target_modules` is neither a list of strings nor a string")?;
        let exclude_modules: Option<ModuleMatch> = match m.get("exclude_modules") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v.clone())
                    .context("field `exclude_modules` is neither a list of strings nor a string")?,
            ),
        };
        let base = string(&m, "base_model_name_or_path")?;
        for k in [
            "r",
            "lora_alpha",
            "lora_dropout",
            "use_rslora",
            "target_modules",
            "exclude_modules",
            "base_model_name_or_path",
        ] {
            m.remove(k);
        }
        let config = Self {
            r: r as usize,
            lora_alpha,
            lora_dropout,
            use_rslora,
            target_modules,
            exclude_modules,
            base_model_name_or_path: base,
            extra: m,
        };
        config
            .selector()
            .context("field `target_modules` or `exclude_modules`")?;
        Ok(config)
    }

    /// The JSON PEFT expects (defaults for the fields PEFT needs, then the preserved extras).
    pub fn to_json(&self) -> String {
        let alpha = if self.lora_alpha.fract() == 0.0 {
            json!(self.lora_alpha as i64)
        } else {
            json!(self.lora_alpha)
        };
        let mut m = Map::new();
        let defaults = json!({
            "peft_type": "LORA",
            "task_type": null,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "layers_pattern": null,
            "layers_to_transform": null,
            "lora_bias": false,
            "modules_to_save": null,
            "rank_pattern": {},
            "alpha_pattern": {},
            "revision": null,
            "use_dora": false,
        });
        for (k, v) in defaults.as_object().expect("object") {
            m.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        m.insert("r".into(), json!(self.r));
        m.insert("lora_alpha".into(), alpha);
        m.insert("lora_dropout".into(), json!(self.lora_dropout));
        m.insert("use_rslora".into(), json!(self.use_rslora));
        m.insert(
            "target_modules".into(),
            serde_json::to_value(&self.target_modules).expect("json"),
        );
        m.insert(
            "exclude_modules".into(),
            serde_json::to_value(&self.exclude_modules).expect("json"),
        );
        m.insert(
            "base_model_name_or_path".into(),
            json!(self.base_model_name_or_path),
        );
        let sorted: BTreeMap<_, _> = m.into_iter().collect();
        serde_json::to_string_pretty(&sorted).expect("json")
    }
}

/// PEFT features that change what an adapter computes and that medgrpo does not implement:
/// each must be absent or at its neutral value.
fn check_unsupported(m: &Map<String, Value>) -> Result<()> {
    let not_true = |v: &Value| v.as_bool() != Some(true);
    let empty = |v: &Value| {
        v.is_null()
            || v.as_array().is_some_and(|a| a.is_empty())
            || v.as_object().is_some_and(|o| o.is_empty())
    };
    let checks: [(&str, &FieldCheck); 10] = [
        ("use_dora", &not_true),
        ("fan_in_fan_out", &not_true),
        ("lora_bias", &not_true),
        ("bias", &|v: &Value| {
            v.is_null() || v.as_str() == Some("none")
        }),
        ("modules_to_save", &empty),
        ("rank_pattern", &empty),
        ("alpha_pattern", &empty),
        ("layers_to_transform", &empty),
        ("target_parameters", &empty),
        ("trainable_token_indices", &empty),
    ];
    for (k, ok) in checks {
        if let Some(v) = m.get(k) {
            ensure!(
                ok(v),
                "field `{k}` = {} is not supported by medgrpo's LoRA",
                clip(&v.to_string())
            );
        }
    }
    Ok(())
}

/// What a JSON value is, for "is a string, expected a number".
fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string ({})", clip_quoted(s)),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn wrong_type(k: &str, v: &Value, expected: &str) -> anyhow::Error {
    anyhow!("field `{k}` is {}, expected {expected}", kind(v))
}

/// A field that must be a number: `None` when absent or null.
fn number(m: &Map<String, Value>, k: &str) -> Result<Option<f64>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| wrong_type(k, v, "a number")),
    }
}

/// A field that must be a non-negative integer (`8` or `8.0`).
fn integer(m: &Map<String, Value>, k: &str) -> Result<Option<u64>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..1e15).contains(f))
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| wrong_type(k, v, "a non-negative integer")),
    }
}

fn boolean(m: &Map<String, Value>, k: &str) -> Result<Option<bool>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| wrong_type(k, v, "true or false")),
    }
}

fn string(m: &Map<String, Value>, k: &str) -> Result<Option<String>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(wrong_type(k, v, "a string")),
    }
}

/// A row-major f32 matrix on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostMatrix {
    /// `[rows, cols]`.
    pub shape: [usize; 2],
    /// Values.
    pub data: Vec<f32>,
}

/// One layer's `lora_A` (`[r, in]`) and `lora_B` (`[out, r]`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    /// `lora_A.weight`.
    pub a: HostMatrix,
    /// `lora_B.weight`.
    pub b: HostMatrix,
}

/// A whole adapter: config plus one pair per module path (transformers ≥ 4.52 names).
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    /// `adapter_config.json`.
    pub config: AdapterConfig,
    /// Module path -> weights.
    pub layers: BTreeMap<String, LoraPair>,
}

/// Renames a module path of the older Gemma 3 layout to the transformers ≥ 4.52 one.
pub fn canonical_module_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("language_model.model.") {
        format!("model.language_model.{rest}")
    } else if name.starts_with("vision_tower.") || name.starts_with("multi_modal_projector.") {
        format!("model.{name}")
    } else {
        name.to_string()
    }
}

/// The safetensors key of a LoRA matrix (`which` is `"A"` or `"B"`).
pub fn peft_key(module: &str, which: &str) -> String {
    format!("{KEY_PREFIX}{module}.lora_{which}.weight")
}

impl Adapter {
    /// Writes `adapter_config.json` and `adapter_model.safetensors` (f32, metadata
    /// `format = pt` like PEFT) into `dir`, creating it.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, p) in &self.layers {
            ensure!(
                p.a.shape[0] == self.config.r && p.b.shape[1] == self.config.r,
                "{name}: rank of A {:?} / B {:?} differs from r = {}",
                p.a.shape,
                p.b.shape,
                self.config.r
            );
        }
        let bytes: Vec<(String, [usize; 2], Vec<u8>)> = self
            .layers
            .iter()
            .flat_map(|(name, p)| [(peft_key(name, "A"), &p.a), (peft_key(name, "B"), &p.b)])
            .map(|(k, m)| {
                (
                    k,
                    m.shape,
                    m.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(k, s, b)| Ok((k.clone(), TensorView::new(Dtype::F32, s.to_vec(), b)?)))
            .collect::<Result<_, safetensors::SafeTensorError>>()?;
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let path = dir.join(WEIGHTS_FILE);
        safetensors::serialize_to_file(views, Some(meta), &path)
            .with_context(|| format!("writing {}", path.display()))?;
        let cpath = dir.join(CONFIG_FILE);
        std::fs::write(&cpath, self.config.to_json())
            .with_context(|| format!("writing {}", cpath.display()))?;
        Ok(())
    }

    /// Reads a PEFT adapter directory (either key layout; f32, bf16 or f16 weights), checking
    /// the weights against the config as PEFT would build them: every pair has rank `r`, and
    /// every module with weights is one `target_modules` / `exclude_modules` select.
    pub fn load(dir: &Path) -> Result<Self> {
        let cpath = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cpath)
            .with_context(|| format!("reading {}", cpath.display()))?;
        let config =
            AdapterConfig::from_json(&text).with_context(|| format!("in {}", cpath.display()))?;
        let wpath = dir.join(WEIGHTS_FILE);
        let bytes =
            std::fs::read(&wpath).with_context(|| format!("reading {}", wpath.display()))?;
        let layers = read_pairs(&wpath, &bytes)?;
        let adapter = Self { config, layers };
        adapter
            .check_against_config()
            .with_context(|| format!("{} and {}", cpath.display(), wpath.display()))?;
        Ok(adapter)
    }

    /// The parts of `target_modules` that select none of this adapter's layers (PEFT saves
    /// weights for every module it targets, so these matched no module of the base model).
    pub fn unmatched_targets(&self) -> Vec<String> {
        let names: Vec<String> = self.layers.keys().cloned().collect();
        self.config
            .selector()
            .map(|s| s.unmatched(&names))
            .unwrap_or_default()
    }

    fn check_against_config(&self) -> Result<()> {
        let r = self.config.r;
        if let Some((name, p)) = self.layers.iter().find(|(_, p)| p.a.shape[0] != r) {
            bail!(
                "`r` is {r} in the config, but {name} has rank {} (lora_A {:?}, lora_B {:?}); the scaling alpha/r would be wrong",
                p.a.shape[0],
                p.a.shape,
                p.b.shape
            );
        }
        let selector = self.config.selector()?;
        let stray: Vec<&String> = self
            .layers
            .keys()
            .filter(|n| !selector.is_target(n))
            .collect();
        if let Some(first) = stray.first() {
            let kinds: BTreeSet<&str> = stray.iter().filter_map(|n| n.rsplit('.').next()).collect();
            bail!(
                "{} layer(s) have weights but target_modules {} (exclude_modules {}) do not select them, so PEFT would not apply them: {} (e.g. {first})",
                stray.len(),
                clip(&serde_json::to_string(&self.config.target_modules).unwrap_or_default()),
                clip(&serde_json::to_string(&self.config.exclude_modules).unwrap_or_default()),
                kinds.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        Ok(())
    }
}

/// The lora_A / lora_B pairs of an adapter weights file, by canonical module path.
fn read_pairs(wpath: &Path, bytes: &[u8]) -> Result<BTreeMap<String, LoraPair>> {
    check_header(bytes, wpath)?;
    let st = SafeTensors::deserialize(bytes)
        .with_context(|| format!("{} is not safetensors", wpath.display()))?;
    let mut a_map = BTreeMap::new();
    let mut b_map = BTreeMap::new();
    for (key, view) in st.tensors() {
        let ctx = || format!("{}: tensor {}", wpath.display(), clip(&key));
        let Some(rest) = key.strip_prefix(KEY_PREFIX) else {
            bail!("{}: unexpected key prefix", ctx());
        };
        let (module, which) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
            (m, 'A')
        } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
            (m, 'B')
        } else {
            bail!(
                "{}: not a lora_A/lora_B weight (unsupported adapter part)",
                ctx()
            );
        };
        let shape = view.shape();
        ensure!(shape.len() == 2, "{}: shape {shape:?} is not 2-D", ctx());
        let m = HostMatrix {
            shape: [shape[0], shape[1]],
            data: to_f32(view.dtype(), view.data()).with_context(ctx)?,
        };
        let module = canonical_module_name(module);
        if which == 'A' {
            a_map.insert(module, m);
        } else {
            b_map.insert(module, m);
        }
    }
    let mut layers = BTreeMap::new();
    for (module, a) in a_map {
        let b = b_map
            .remove(&module)
            .with_context(|| format!("{}: {module} has lora_A but no lora_B", wpath.display()))?;
        ensure!(
            a.shape[0] == b.shape[1],
            "{}: {module}: lora_A {:?} and lora_B {:?} ranks differ",
            wpath.display(),
            a.shape,
            b.shape
        );
        layers.insert(module, LoraPair { a, b });
    }
    if let Some(module) = b_map.keys().next() {
        bail!("{}: {module} has lora_B but no lora_A", wpath.display());
    }
    Ok(layers)
}

fn to_f32(dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        d => bail!("dtype {d:?} is not a float type"),
    })
}

#[cfg(test)]
mod tests;

//! PEFT adapter files: `adapter_config.json` + `adapter_model.safetensors`, read and written so
//! an adapter trained here loads in PEFT / vLLM and one trained there loads here.
//!
//! Keys (ref: peft `utils/save_and_load.py`): `base_model.model.<module path>.lora_A.weight`
//! (`[r, in]`) and `.lora_B.weight` (`[out, r]`), the adapter name removed. Module paths are the
//! transformers ≥ 4.52 ones (`model.language_model.layers.N.self_attn.q_proj`); files written by
//! older transformers (`language_model.model.layers.N...`, `vision_tower.vision_model...`,
//! `multi_modal_projector...`) are read and renamed to the new layout.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::{Map, Value, json};

use super::targets::ModuleMatch;
use crate::model::lora_linear::LoraSettings;

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

    /// Parses `adapter_config.json`, refusing PEFT features medgrpo does not implement (so an
    /// adapter never loads silently wrong).
    pub fn from_json(text: &str) -> Result<Self> {
        let mut m: Map<String, Value> = serde_json::from_str(text).context("not a JSON object")?;
        let peft_type = m.get("peft_type").and_then(Value::as_str).unwrap_or("LORA");
        ensure!(
            peft_type == "LORA",
            "peft_type is {peft_type}, only LORA is supported"
        );
        let num = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_f64);
        let r = m
            .get("r")
            .and_then(Value::as_u64)
            .context("field `r` missing or not an integer")? as usize;
        let lora_alpha = num(&m, "lora_alpha").context("field `lora_alpha` missing")?;
        let lora_dropout = num(&m, "lora_dropout").unwrap_or(0.0);
        let use_rslora = m
            .get("use_rslora")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let not_true = |v: &Value| v.as_bool() != Some(true);
        let empty = |v: &Value| {
            v.is_null()
                || v.as_array().is_some_and(|a| a.is_empty())
                || v.as_object().is_some_and(|o| o.is_empty())
        };
        let checks: [(&str, &FieldCheck); 7] = [
            ("use_dora", &not_true),
            ("fan_in_fan_out", &not_true),
            ("lora_bias", &not_true),
            ("bias", &|v: &Value| {
                v.is_null() || v.as_str() == Some("none")
            }),
            ("modules_to_save", &empty),
            ("rank_pattern", &empty),
            ("alpha_pattern", &empty),
        ];
        for (k, ok) in checks {
            if let Some(v) = m.get(k) {
                ensure!(ok(v), "`{k}` = {v} is not supported by medgrpo's LoRA");
            }
        }
        let target_modules: ModuleMatch = serde_json::from_value(
            m.get("target_modules")
                .cloned()
                .context("field `target_modules` missing")?,
        )
        .context("`target_modules` is neither a list nor a string")?;
        let exclude_modules: Option<ModuleMatch> = match m.get("exclude_modules") {
            None | Some(Value::Null) => None,
            Some(v) => Some(serde_json::from_value(v.clone()).context("bad `exclude_modules`")?),
        };
        let base = m
            .get("base_model_name_or_path")
            .and_then(Value::as_str)
            .map(str::to_string);
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
        Ok(Self {
            r,
            lora_alpha,
            lora_dropout,
            use_rslora,
            target_modules,
            exclude_modules,
            base_model_name_or_path: base,
            extra: m,
        })
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

    /// Reads a PEFT adapter directory (either key layout; f32, bf16 or f16 weights).
    pub fn load(dir: &Path) -> Result<Self> {
        let cpath = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cpath)
            .with_context(|| format!("reading {}", cpath.display()))?;
        let config =
            AdapterConfig::from_json(&text).with_context(|| format!("in {}", cpath.display()))?;
        let wpath = dir.join(WEIGHTS_FILE);
        let bytes =
            std::fs::read(&wpath).with_context(|| format!("reading {}", wpath.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{} is not safetensors", wpath.display()))?;
        let mut a_map = BTreeMap::new();
        let mut b_map = BTreeMap::new();
        for (key, view) in st.tensors() {
            let ctx = || format!("{}: tensor {key}", wpath.display());
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
            let b = b_map.remove(&module).with_context(|| {
                format!("{}: {module} has lora_A but no lora_B", wpath.display())
            })?;
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
        Ok(Self { config, layers })
    }
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

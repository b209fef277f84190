//! Adapter files against PEFT 0.21.2: the PEFT-saved fixture loads with the right weights, both
//! key layouts are read, a save/load round trip is exact, and an adapter written here reproduces
//! our outputs when PEFT loads it (checked by `scripts/bnb_peft_fixtures.py
//! --check-rust-adapter`, verdict committed in `tests/fixtures/lora/peft_check.json`).

use super::*;
use crate::lora::targets::{EXCLUDE_VISION, default_match};
use crate::model::lora_linear::{DenseLinear, LinearBase, LoraAdapter, LoraLinear, LoraMode};
use crate::quant::testutil::{Fixture, fixture};
use burn::backend::Flex;
use burn::prelude::*;

fn matrix(f: &Fixture, name: &str) -> HostMatrix {
    let s = f.shape(name);
    HostMatrix {
        shape: [s[0], s[1]],
        data: f.f32(name),
    }
}

#[test]
fn loads_the_peft_saved_adapter() {
    let ad = Adapter::load(&fixture("lora/peft_adapter")).unwrap();
    assert_eq!(ad.config.r, 4);
    assert_eq!(ad.config.lora_alpha, 8.0);
    assert_eq!(ad.config.lora_dropout, 0.1);
    assert!(!ad.config.use_rslora);
    assert_eq!(
        ad.config.exclude_modules,
        Some(ModuleMatch::Regex(EXCLUDE_VISION.into()))
    );
    assert_eq!(ad.config.settings().scaling(), 2.0);
    let f = Fixture::open("lora/lora_ref.safetensors");
    assert_eq!(ad.layers.len(), 14);
    for (name, p) in &ad.layers {
        assert!(name.starts_with("model.language_model.layers."), "{name}");
        assert_eq!(p.a, matrix(&f, &format!("plain.{name}.lora_A")));
        assert_eq!(p.b, matrix(&f, &format!("plain.{name}.lora_B")));
    }
}

#[test]
fn reads_the_older_key_layout() {
    let ad = Adapter::load(&fixture("lora/peft_adapter")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Rewrite the file with pre-4.52 names.
    let bytes = std::fs::read(fixture("lora/peft_adapter/adapter_model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            (
                k.replace(
                    "base_model.model.model.language_model.",
                    "base_model.model.language_model.model.",
                ),
                v,
            )
        })
        .collect();
    assert!(
        renamed[0]
            .0
            .starts_with("base_model.model.language_model.model.layers.")
    );
    safetensors::serialize_to_file(renamed, None, &dir.path().join(WEIGHTS_FILE)).unwrap();
    std::fs::copy(
        fixture("lora/peft_adapter/adapter_config.json"),
        dir.path().join(CONFIG_FILE),
    )
    .unwrap();
    let old = Adapter::load(dir.path()).unwrap();
    assert_eq!(old.layers, ad.layers);
}

#[test]
fn save_load_round_trip_has_peft_keys() {
    let ad = Adapter::load(&fixture("lora/peft_adapter")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    ad.save(dir.path()).unwrap();
    let back = Adapter::load(dir.path()).unwrap();
    assert_eq!(back, ad);
    let keys = |p: &std::path::Path| {
        let b = std::fs::read(p.join(WEIGHTS_FILE)).unwrap();
        let mut k: Vec<String> = SafeTensors::deserialize(&b)
            .unwrap()
            .names()
            .into_iter()
            .map(String::from)
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(dir.path()), keys(&fixture("lora/peft_adapter")));
}

#[test]
fn rejects_unsupported_peft_features() {
    let ok = std::fs::read_to_string(fixture("lora/peft_adapter/adapter_config.json")).unwrap();
    assert!(AdapterConfig::from_json(&ok).is_ok());
    for (from, to) in [
        ("\"use_dora\": false", "\"use_dora\": true"),
        ("\"bias\": \"none\"", "\"bias\": \"all\""),
        ("\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\""),
    ] {
        assert!(ok.contains(from));
        let bad = ok.replace(from, to);
        assert!(AdapterConfig::from_json(&bad).is_err(), "{to} accepted");
    }
}

/// The adapter medgrpo writes for PEFT: the PEFT fixture's A, B scaled by 1.5 (so it is not
/// PEFT's own file), and our outputs on the fixture inputs. Set MEDGRPO_WRITE_FIXTURES=1 to
/// rewrite `tests/fixtures/lora/rust_adapter` (then rerun the Python check); otherwise the
/// committed files must equal what this code writes now, and PEFT's verdict must be ok.
#[test]
fn adapter_written_here_is_the_one_peft_checked() {
    let f = Fixture::open("lora/lora_ref.safetensors");
    let peft = Adapter::load(&fixture("lora/peft_adapter")).unwrap();
    let (t, e) = default_match(false);
    let mut settings = peft.config.settings();
    settings.alpha = 12.0;
    let cfg = AdapterConfig::new(&settings, t, e, Some("google/medgemma-4b-it".into()));
    let mut layers = BTreeMap::new();
    let mut outputs: Vec<(String, [usize; 2], Vec<f32>)> = Vec::new();
    let dev = Default::default();
    for (name, p) in &peft.layers {
        let b = HostMatrix {
            shape: p.b.shape,
            data: p.b.data.iter().map(|v| v * 1.5).collect(),
        };
        let t2 = |m: &HostMatrix| {
            Tensor::<Flex, 2>::from_data(TensorData::new(m.data.clone(), m.shape), &dev)
        };
        let w = matrix(&f, &format!("base.{name}.weight"));
        let layer = LoraLinear {
            base: LinearBase::Dense(DenseLinear::new(t2(&w), None)),
            lora: Some(LoraAdapter::from_tensors(
                t2(&p.a),
                t2(&b),
                settings.scaling(),
                0.0,
                0,
            )),
        };
        let x = matrix(&f, &format!("plain.{name}.x"));
        let y = layer.forward_mode(t2(&x), LoraMode::Eval);
        let dims = y.dims();
        outputs.push((format!("{name}.x"), x.shape, x.data.clone()));
        outputs.push((format!("{name}.y"), dims, y.into_data().to_vec().unwrap()));
        layers.insert(name.clone(), LoraPair { a: p.a.clone(), b });
    }
    let ad = Adapter {
        config: cfg,
        layers,
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rust_adapter");
    ad.save(&dir).unwrap();
    let out_bytes: Vec<(String, [usize; 2], Vec<u8>)> = outputs
        .into_iter()
        .map(|(k, s, v)| (k, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = out_bytes
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.to_vec(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &tmp.path().join("rust_outputs.safetensors"))
        .unwrap();
    let committed = fixture("lora");
    if std::env::var("MEDGRPO_WRITE_FIXTURES").is_ok() {
        std::fs::create_dir_all(committed.join("rust_adapter")).unwrap();
        for f in [CONFIG_FILE, WEIGHTS_FILE] {
            std::fs::copy(dir.join(f), committed.join("rust_adapter").join(f)).unwrap();
        }
        std::fs::copy(
            tmp.path().join("rust_outputs.safetensors"),
            committed.join("rust_outputs.safetensors"),
        )
        .unwrap();
        return;
    }
    for f in [CONFIG_FILE, WEIGHTS_FILE] {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(committed.join("rust_adapter").join(f)).unwrap(),
            "{f} differs from the committed one PEFT checked"
        );
    }
    // The outputs PEFT checked, within the rounding of the CPU's matrix kernels (AVX2 and
    // AVX-512 sum in different orders); PEFT's own check allows 1e-4.
    let ours = std::fs::read(tmp.path().join("rust_outputs.safetensors")).unwrap();
    let checked = std::fs::read(committed.join("rust_outputs.safetensors")).unwrap();
    let (ours, checked) = (
        safetensors::SafeTensors::deserialize(&ours).unwrap(),
        safetensors::SafeTensors::deserialize(&checked).unwrap(),
    );
    let mut names = ours.names();
    names.sort();
    let mut want = checked.names();
    want.sort();
    assert_eq!(names, want);
    for name in names {
        let (a, b) = (ours.tensor(name).unwrap(), checked.tensor(name).unwrap());
        assert_eq!(a.shape(), b.shape(), "{name}");
        let f = |d: &[u8]| -> Vec<f32> {
            d.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        for (i, (x, y)) in f(a.data()).iter().zip(f(b.data())).enumerate() {
            assert!(
                (x - y).abs() <= 1e-6 + 1e-6 * y.abs(),
                "{name}[{i}]: {x} vs the checked {y}"
            );
        }
    }
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(committed.join("peft_check.json")).unwrap())
            .unwrap();
    assert_eq!(verdict["ok"], true);
    assert!(verdict["max_abs_diff"].as_f64().unwrap() < 1e-4);
    assert_eq!(verdict["modules"].as_array().unwrap().len(), 14);
}

/// A copy of the PEFT fixture adapter in a temp dir with its config edited by `edit`.
fn edited_adapter(edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("lora/peft_adapter");
    std::fs::copy(src.join(WEIGHTS_FILE), dir.path().join(WEIGHTS_FILE)).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join(CONFIG_FILE)).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.path().join(CONFIG_FILE), cfg.to_string()).unwrap();
    dir
}

fn load_err(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let dir = edited_adapter(edit);
    format!("{:#}", Adapter::load(dir.path()).unwrap_err())
}

/// `r` must be the rank of every tensor pair (the fixture's is 4): a wrong `r` would change
/// α/r silently, and `r: 0` divides by zero.
#[test]
fn r_must_match_the_tensors() {
    let e = load_err(|c| c["r"] = 8.into());
    assert!(e.contains("`r` is 8") && e.contains("rank 4"), "{e}");
    assert!(e.contains("model.language_model.layers."), "{e}");
    let e = load_err(|c| c["r"] = 0.into());
    assert!(e.contains("`r` must be at least 1"), "{e}");
}

/// `target_modules` is what PEFT builds: weights of a module it does not select are refused
/// (not applied), and a target that selects nothing among the weights is named.
#[test]
fn target_modules_must_select_the_weights() {
    let e = load_err(|c| c["target_modules"] = serde_json::json!(["q_proj", "v_proj"]));
    assert!(e.contains("target_modules") && e.contains("k_proj"), "{e}");
    let e = load_err(|c| c["exclude_modules"] = serde_json::json!(".*layers\\.1\\..*"));
    assert!(e.contains("layers.1."), "{e}");
    let dir = edited_adapter(|c| {
        c["target_modules"] = serde_json::json!([
            "down_proj",
            "o_proj",
            "up_proj",
            "v_proj",
            "q_proj",
            "k_proj",
            "gate_proj",
            "typo_proj"
        ])
    });
    let ad = Adapter::load(dir.path()).unwrap();
    assert_eq!(ad.unmatched_targets(), ["typo_proj"]);
}

/// A field of the wrong type says so (it is there), naming the field and the type.
#[test]
fn wrong_types_are_not_reported_as_missing() {
    let e = load_err(|c| c["lora_alpha"] = "eight".into());
    assert!(e.contains("`lora_alpha`") && e.contains("a string"), "{e}");
    assert!(!e.contains("missing"), "{e}");
    let e = load_err(|c| c["r"] = "4".into());
    assert!(e.contains("`r`") && e.contains("a string"), "{e}");
    let e = load_err(|c| {
        c.as_object_mut().unwrap().remove("lora_alpha");
    });
    assert!(e.contains("`lora_alpha` is missing"), "{e}");
}

mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::*;

    const KEYS: [&str; 12] = [
        "r",
        "lora_alpha",
        "lora_dropout",
        "use_rslora",
        "target_modules",
        "exclude_modules",
        "peft_type",
        "use_dora",
        "bias",
        "modules_to_save",
        "layers_to_transform",
        "base_model_name_or_path",
    ];

    /// A JSON value of any type, often one a real config holds.
    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..40).prop_map(Value::from),
            (-1.0f64..64.0).prop_map(Value::from),
            prop_oneof![Just("LORA"), Just("none"), Just("all-linear"), Just("(")]
                .prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::from),
            vec("[a-z_]{1,7}", 0..3).prop_map(|v| json!(v)),
            Just(json!({})),
        ]
    }

    /// A valid config with some fields replaced, removed or added.
    fn config() -> impl Strategy<Value = Map<String, Value>> {
        let edits = vec(
            (
                prop_oneof![
                    proptest::sample::select(KEYS.to_vec()).prop_map(String::from),
                    "[a-z_]{1,8}"
                ],
                proptest::option::of(value()),
            ),
            0..5,
        );
        edits.prop_map(|edits| {
            let mut m = json!({
                "r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "peft_type": "LORA",
                "target_modules": ["q_proj", "v_proj"], "bias": "none",
            })
            .as_object()
            .unwrap()
            .clone();
            for (k, v) in edits {
                match v {
                    Some(v) => m.insert(k, v),
                    None => m.remove(&k),
                };
            }
            m
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any config: no panic; an accepted one has a usable rank, alpha and dropout and
        /// survives a write and read back; a refused one names a field.
        #[test]
        fn configs_never_panic_and_errors_name_a_field(m in config()) {
            let text = Value::Object(m.clone()).to_string();
            match AdapterConfig::from_json(&text) {
                Ok(c) => {
                    prop_assert!(c.r >= 1 && c.lora_alpha.is_finite());
                    prop_assert!((0.0..1.0).contains(&c.lora_dropout));
                    let back = AdapterConfig::from_json(&c.to_json()).unwrap();
                    prop_assert_eq!(back.settings(), c.settings());
                    prop_assert_eq!(back.target_modules, c.target_modules);
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    let named = KEYS.iter().chain(["trainable_token_indices", "target_parameters",
                        "rank_pattern", "alpha_pattern", "fan_in_fan_out", "lora_bias"].iter())
                        .any(|k| e.contains(&format!("`{k}`")));
                    prop_assert!(named, "no field named in: {e}");
                }
            }
        }
    }

    /// Not JSON, or not an object: refused, saying so.
    #[test]
    fn a_config_that_is_not_an_object_is_refused() {
        for text in ["", "[1]", "{\"r\": ", "\"x\""] {
            let e = format!("{:#}", AdapterConfig::from_json(text).unwrap_err());
            assert!(e.contains("not a JSON object"), "{text}: {e}");
        }
    }
}

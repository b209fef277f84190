use super::*;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn parses_the_transformers5_vlm_fixture() {
    let c = ModelConfig::from_dir(&fixture("tiny-gemma3")).unwrap();
    let t = &c.text;
    assert_eq!(
        (t.vocab_size, t.hidden_size, t.num_hidden_layers),
        (512, 64, 6)
    );
    assert_eq!(
        (t.num_attention_heads, t.num_key_value_heads, t.head_dim),
        (4, 2, 16)
    );
    assert_eq!(t.query_pre_attn_scalar, 24.0);
    assert_eq!(t.sliding_window, 8);
    use LayerType::*;
    assert_eq!(
        t.layer_types,
        vec![Sliding, Sliding, Full, Sliding, Sliding, Full]
    );
    assert_eq!(
        t.rope_global,
        RopeConfig {
            theta: 1e6,
            linear_factor: 8.0
        }
    );
    assert_eq!(
        t.rope_local,
        RopeConfig {
            theta: 1e4,
            linear_factor: 1.0
        }
    );
    assert_eq!(t.final_logit_softcapping, None);
    let v = c.vision.as_ref().unwrap();
    assert_eq!(
        (
            v.hidden_size,
            v.image_size,
            v.patch_size,
            v.num_hidden_layers
        ),
        (32, 32, 4, 2)
    );
    assert_eq!(
        (
            c.mm_tokens_per_image,
            c.image_token_id,
            c.boi_token_id,
            c.eoi_token_id
        ),
        (16, 9, 7, 8)
    );
}

#[test]
fn parses_the_transformers4_style_text_fixture() {
    // config.json of tiny-gemma3-text was rewritten with 4.x keys (rope_theta, rope_local_base_freq,
    // rope_scaling, sliding_window_pattern) and transformers reloaded it to the same layer types.
    let c = ModelConfig::from_dir(&fixture("tiny-gemma3-text")).unwrap();
    assert!(c.vision.is_none());
    let t = &c.text;
    use LayerType::*;
    assert_eq!(
        t.layer_types,
        vec![Sliding, Sliding, Full, Sliding, Sliding, Full]
    );
    assert_eq!(
        t.rope_global,
        RopeConfig {
            theta: 1e6,
            linear_factor: 8.0
        }
    );
    assert_eq!(
        t.rope_local,
        RopeConfig {
            theta: 1e4,
            linear_factor: 1.0
        }
    );
    assert_eq!(t.final_logit_softcapping, Some(3.0));
    assert_eq!(t.attn_logit_softcapping, Some(2.5));
}

#[test]
fn sparse_hub_config_takes_transformers_defaults() {
    // MedGemma-4B-IT's config.json lists only a few keys; the rest are class defaults.
    let v: serde_json::Value = serde_json::json!({
        "architectures": ["Gemma3ForConditionalGeneration"],
        "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144,
        "mm_tokens_per_image": 256, "model_type": "gemma3",
        "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
            "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
            "sliding_window": 1024},
        "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
            "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
            "patch_size": 14, "vision_use_head": false}
    });
    let c = ModelConfig::from_json(&v).unwrap();
    assert_eq!(c.text.head_dim, 256);
    assert_eq!(c.text.vocab_size, 262_208);
    assert_eq!(c.text.num_attention_heads, 8);
    assert_eq!(c.text.query_pre_attn_scalar, 256.0);
    assert_eq!(
        c.text
            .layer_types
            .iter()
            .filter(|t| **t == LayerType::Full)
            .count(),
        5
    );
    assert_eq!(c.text.layer_types[5], LayerType::Full);
    assert_eq!(c.text.rope_global.linear_factor, 8.0);
    assert_eq!(c.vision.unwrap().patches_per_side(), 64);
}

#[test]
fn rejects_unknown_rope_type_and_bad_pooling() {
    let v = serde_json::json!({"model_type": "gemma3_text", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}});
    let e = format!("{:#}", ModelConfig::from_json(&v).unwrap_err());
    assert!(e.contains("yarn"), "{e}");
    let v = serde_json::json!({"text_config": {}, "vision_config": {"image_size": 32, "patch_size": 4}, "mm_tokens_per_image": 15});
    let e = format!("{:#}", ModelConfig::from_json(&v).unwrap_err());
    assert!(e.contains("mm_tokens_per_image"), "{e}");
}

#[test]
fn generation_config_lists_every_eos() {
    let g = GenerationDefaults::from_dir(&fixture("tiny-gemma3")).unwrap();
    assert_eq!(g.eos_token_ids, vec![1, 6]);
    assert_eq!((g.pad_token_id, g.bos_token_id, g.top_k), (0, 2, 64));
    assert_eq!(g.top_p, 0.95);
    let g = GenerationDefaults::from_json(&serde_json::json!({"eos_token_id": 1})).unwrap();
    assert_eq!(g.eos_token_ids, vec![1]);
}

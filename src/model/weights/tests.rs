use super::*;

#[test]
fn canonical_names_of_every_layout() {
    let cases = [
        (
            "language_model.model.layers.0.self_attn.q_proj.weight",
            "language_model.layers.0.self_attn.q_proj.weight",
        ),
        (
            "model.language_model.layers.0.self_attn.q_proj.weight",
            "language_model.layers.0.self_attn.q_proj.weight",
        ),
        (
            "model.layers.0.self_attn.q_proj.weight",
            "language_model.layers.0.self_attn.q_proj.weight",
        ),
        (
            "model.embed_tokens.weight",
            "language_model.embed_tokens.weight",
        ),
        (
            "vision_tower.vision_model.encoder.layers.1.mlp.fc1.bias",
            "vision_tower.encoder.layers.1.mlp.fc1.bias",
        ),
        (
            "model.vision_tower.vision_model.post_layernorm.weight",
            "vision_tower.post_layernorm.weight",
        ),
        (
            "vision_tower.embeddings.patch_embedding.weight",
            "vision_tower.embeddings.patch_embedding.weight",
        ),
        (
            "model.multi_modal_projector.mm_input_projection_weight",
            "multi_modal_projector.mm_input_projection_weight",
        ),
        ("language_model.lm_head.weight", "lm_head.weight"),
        ("lm_head.weight", "lm_head.weight"),
    ];
    for (raw, want) in cases {
        assert_eq!(canonical_name(raw), want, "{raw}");
    }
}

mod snapshots {
    use super::super::*;
    use crate::model::gemma3::{Gemma3, Keep, Step};
    use crate::model::test_util::*;
    use safetensors::SafeTensors;
    use safetensors::tensor::TensorView;
    use std::collections::HashMap;

    /// Every tensor of the tiny VLM fixture: raw name → (shape, f32 values).
    fn fixture_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let bytes = std::fs::read(fixture("tiny-gemma3").join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut out: Vec<_> = st
            .tensors()
            .into_iter()
            .map(|(n, t)| {
                let v = t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (n, t.shape().to_vec(), v)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn encode(dtype: Dtype, v: &[f32]) -> Vec<u8> {
        match dtype {
            Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::BF16 => v
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect(),
            Dtype::F16 => v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
            _ => unreachable!(),
        }
    }

    /// Writes `tensors` as `shards` files plus an index (or one model.safetensors when 1).
    fn write_snapshot(
        dir: &Path,
        tensors: &[(String, Vec<usize>, Vec<f32>, Dtype)],
        shards: usize,
    ) {
        std::fs::copy(
            fixture("tiny-gemma3").join("config.json"),
            dir.join("config.json"),
        )
        .unwrap();
        let mut weight_map = serde_json::Map::new();
        for s in 0..shards {
            let file = if shards == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{shards:05}.safetensors", s + 1)
            };
            let part: Vec<_> = tensors
                .iter()
                .enumerate()
                .filter(|(i, _)| i % shards == s)
                .map(|(_, t)| t)
                .collect();
            let bufs: Vec<Vec<u8>> = part.iter().map(|(_, _, v, d)| encode(*d, v)).collect();
            let views: Vec<(String, TensorView)> = part
                .iter()
                .zip(&bufs)
                .map(|((n, shape, _, d), b)| {
                    (n.clone(), TensorView::new(*d, shape.clone(), b).unwrap())
                })
                .collect();
            for (n, _) in &views {
                weight_map.insert(n.clone(), serde_json::Value::String(file.clone()));
            }
            safetensors::serialize_to_file(
                views,
                None::<HashMap<String, String>>,
                &dir.join(&file),
            )
            .unwrap();
        }
        if shards > 1 {
            let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
            std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        }
    }

    fn hub_name(n: &str) -> String {
        if let Some(r) = n.strip_prefix("vision_tower.") {
            format!("vision_tower.vision_model.{r}")
        } else {
            n.to_string()
        }
    }

    #[test]
    fn sharded_hub_layout_in_mixed_dtypes_loads_and_matches() {
        let dir = tempfile::tempdir().unwrap();
        let dtypes = [Dtype::F32, Dtype::BF16, Dtype::F16];
        let tensors: Vec<_> = fixture_tensors()
            .into_iter()
            .enumerate()
            .map(|(i, (n, s, v))| (hub_name(&n), s, v, dtypes[i % 3]))
            .collect();
        write_snapshot(dir.path(), &tensors, 3);
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        let cfg = ModelConfig::from_dir(dir.path()).unwrap();
        ckpt.validate(&expected_tensors(&cfg)).unwrap();
        for (n, shape, v, d) in &tensors {
            let t = ckpt.read(&canonical_name(n)).unwrap();
            assert_eq!(&t.shape, shape);
            let want: Vec<f32> = match d {
                Dtype::BF16 => v
                    .iter()
                    .map(|x| half::bf16::from_f32(*x).to_f32())
                    .collect(),
                Dtype::F16 => v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect(),
                _ => v.clone(),
            };
            assert_eq!(t.data, want, "{n} as {d:?}");
        }
    }

    #[test]
    fn transformers_452_layout_gives_the_reference_logits() {
        // model.language_model.*, model.vision_tower.vision_model.*, model.multi_modal_projector.*,
        // plus a stored (tied) lm_head.weight, in two f32 shards.
        let dir = tempfile::tempdir().unwrap();
        let mut tensors: Vec<_> = fixture_tensors()
            .into_iter()
            .map(|(n, s, v)| {
                let n = hub_name(&n);
                let n = match n.strip_prefix("language_model.model.") {
                    Some(r) => format!("model.language_model.{r}"),
                    None => format!("model.{n}"),
                };
                (n, s, v, Dtype::F32)
            })
            .collect();
        let embed = tensors
            .iter()
            .find(|t| t.0.ends_with("embed_tokens.weight"))
            .unwrap()
            .clone();
        tensors.push(("lm_head.weight".into(), embed.1, embed.2, Dtype::F32));
        write_snapshot(dir.path(), &tensors, 2);
        let m = Gemma3::<TB>::load(dir.path(), &Default::default()).unwrap();
        let prompt = ids(&reference_json("tiny-gemma3")["text_prompt"]);
        let logits = m
            .forward(&Step::text(vec![prompt]), &mut m.new_cache(1), Keep::All)
            .unwrap();
        let (_, want) = reference_tensor("tiny-gemma3", "text_logits");
        assert!(max_abs_diff(&values(logits), &want) < 1e-4);
    }

    #[test]
    fn mismatched_checkpoint_names_every_problem_before_loading() {
        let dir = tempfile::tempdir().unwrap();
        let mut tensors: Vec<_> = fixture_tensors()
            .into_iter()
            .map(|(n, s, v)| (n, s, v, Dtype::F32))
            .collect();
        tensors.retain(|t| t.0 != "language_model.model.layers.3.mlp.up_proj.weight");
        let q = tensors
            .iter_mut()
            .find(|t| t.0 == "language_model.model.layers.1.self_attn.q_proj.weight")
            .unwrap();
        q.1 = vec![32, 128];
        tensors.push((
            "language_model.model.layers.9.extra.weight".into(),
            vec![2],
            vec![0.0, 1.0],
            Dtype::F32,
        ));
        write_snapshot(dir.path(), &tensors, 1);
        let e = format!(
            "{:#}",
            Gemma3::<TB>::load(dir.path(), &Default::default()).unwrap_err()
        );
        assert!(
            e.contains("missing `language_model.layers.3.mlp.up_proj.weight`"),
            "{e}"
        );
        assert!(
            e.contains("layers.1.self_attn.q_proj.weight` has shape [32, 128], expected [64, 64]"),
            "{e}"
        );
        assert!(
            e.contains("unexpected `language_model.model.layers.9.extra.weight`"),
            "{e}"
        );
        assert!(e.contains("3 problems"), "{e}");
    }
}

mod damaged {
    use super::super::*;
    use crate::model::gemma3::Gemma3;
    use crate::model::generate::{Prompt, SamplingOptions};
    use crate::model::test_util::*;
    use safetensors::SafeTensors;

    /// A safetensors file of three 4-float tensors with the given header offsets.
    fn three_tensors(offsets: [(usize, usize); 3]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        for (name, (a, b)) in ["alpha", "beta", "gamma"].iter().zip(offsets) {
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": "F32", "shape": [4], "data_offsets": [a, b]}),
            );
        }
        let h = serde_json::Value::Object(header).to_string();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&[0u8; 48]);
        out
    }

    fn open_err(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
        format!("{:#}", Checkpoint::open(dir.path()).unwrap_err())
    }

    /// A tensor whose offsets are wrong is the one named (safetensors' own check names the
    /// tensor sorted after it), with the file.
    #[test]
    fn a_bad_offset_names_the_bad_tensor() {
        for (offsets, why) in [
            ([(0, 16), (48, 64), (32, 48)], "past the end"),
            ([(0, 16), (20, 36), (32, 48)], "starts at byte 20"),
            ([(0, 16), (16, 40), (32, 48)], "24 bytes"),
        ] {
            let e = open_err(&three_tensors(offsets));
            assert!(e.contains("model.safetensors"), "{e}");
            assert!(e.contains("`beta`"), "{e}");
            assert!(!e.contains("`gamma`"), "{e}");
            assert!(e.contains(why), "{why}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let good = three_tensors([(0, 16), (16, 32), (32, 48)]);
        std::fs::write(dir.path().join("model.safetensors"), good).unwrap();
        assert!(Checkpoint::open(dir.path()).is_ok());
    }

    /// A model whose weights hold NaN cannot generate: an error, not `[0, 0, 0]`.
    #[test]
    fn nan_weights_stop_generation_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = fixture("tiny-gemma3-text");
        for f in ["config.json", "generation_config.json"] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
            .collect();
        let norm = owned
            .iter_mut()
            .find(|t| t.0.ends_with("model.norm.weight"))
            .expect("final norm");
        norm.3 = match norm.1 {
            Dtype::F32 => f32::NAN.to_le_bytes().repeat(norm.3.len() / 4),
            Dtype::BF16 => half::bf16::NAN.to_le_bytes().repeat(norm.3.len() / 2),
            d => panic!("fixture dtype {d:?}"),
        };
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
        let m = Gemma3::<TB>::load(dir.path(), &Default::default()).unwrap();
        let opts = SamplingOptions {
            greedy: true,
            max_new_tokens: 3,
            ..Default::default()
        };
        let e = m
            .generate(&[Prompt::text(vec![2, 10, 11], 0)], 1, &opts)
            .map(|c| c[0][0].ids.clone())
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("non-finite") && e.contains("NaN"), "{e}");
    }
}

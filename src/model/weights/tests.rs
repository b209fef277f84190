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

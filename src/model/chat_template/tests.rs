//! Chat template checks against transformers' `apply_chat_template` on Gemma 3's template.

use super::*;
use crate::model::tokenizer::tests::{reference, tiny_dir};

fn tiny() -> ChatTemplate {
    ChatTemplate::from_dir(tiny_dir()).unwrap()
}

#[test]
fn renders_like_transformers() {
    let t = tiny();
    let r = reference();
    assert!(r.conversations.len() >= 6);
    for c in &r.conversations {
        let messages: Vec<Message> = serde_json::from_value(c.messages.clone()).unwrap();
        let text = t.render(&messages, c.add_generation_prompt).unwrap();
        assert_eq!(text, c.text, "conversation {}", c.name);
    }
}

#[test]
fn message_serializes_like_transformers_dicts() {
    let m = Message::parts("user", vec![Part::Image, Part::text("Hi")]);
    assert_eq!(
        serde_json::to_value(&m).unwrap(),
        serde_json::json!({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]})
    );
    let m = Message::text("system", "S");
    assert_eq!(
        serde_json::to_value(&m).unwrap(),
        serde_json::json!({"role": "system", "content": "S"})
    );
}

#[test]
fn system_is_folded_into_first_user_turn_by_hand() {
    // Written from the published Gemma 3 template, independently of the fixture.
    let t = tiny();
    let text = t
        .render(
            &[
                Message::text("system", "Sys"),
                Message::parts("user", vec![Part::Image, Part::text("  Q?  ")]),
            ],
            true,
        )
        .unwrap();
    assert_eq!(
        text,
        "<bos><start_of_turn>user\nSys\n\n<start_of_image>Q?<end_of_turn>\n<start_of_turn>model\n"
    );
    let no_gen = t.render(&[Message::text("user", "Q")], false).unwrap();
    assert_eq!(no_gen, "<bos><start_of_turn>user\nQ<end_of_turn>\n");
}

#[test]
fn raise_exception_surfaces_as_error() {
    let t = tiny();
    let err = t
        .render(
            &[Message::text("user", "a"), Message::text("user", "b")],
            true,
        )
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("Conversation roles must alternate"), "{msg}");
}

#[test]
fn finds_template_in_tokenizer_config_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let tmpl =
        "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}:{{ m['content'] }}]{% endfor %}";
    // tokenizer_config.json, list form with a named default.
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        serde_json::json!({
            "bos_token": {"content": "<s>"},
            "chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": tmpl}]
        })
        .to_string(),
    )
    .unwrap();
    let t = ChatTemplate::from_dir(dir.path()).unwrap();
    assert_eq!(
        t.render(&[Message::text("user", "hi")], false).unwrap(),
        "<s>[user:hi]"
    );
    // chat_template.json takes precedence over tokenizer_config.json.
    std::fs::write(
        dir.path().join("chat_template.json"),
        serde_json::json!({"chat_template": "J{{ messages|length }}"}).to_string(),
    )
    .unwrap();
    let t = ChatTemplate::from_dir(dir.path()).unwrap();
    assert_eq!(
        t.render(&[Message::text("user", "hi")], false).unwrap(),
        "J1"
    );
    assert!(t.source().ends_with("chat_template.json"));
    // chat_template.jinja over both.
    std::fs::write(dir.path().join("chat_template.jinja"), "K").unwrap();
    let t = ChatTemplate::from_dir(dir.path()).unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "K");
}

#[test]
fn missing_template_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let err = ChatTemplate::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no chat template"), "{err}");
}

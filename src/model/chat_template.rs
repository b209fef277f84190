//! The model's own chat template (Jinja, as shipped with the checkpoint) rendered with
//! minijinja the way transformers renders it.
//!
//! Why the model's own template and not a hard-coded format: the prompt the policy is trained on
//! must be byte-for-byte what the checkpoint expects and what transformers / vLLM produce at
//! inference, including Gemma 3's folding of the system message into the first user turn.
//! transformers renders with `trim_blocks=True, lstrip_blocks=True`, a `raise_exception`
//! global and `tojson`; the same settings are used here.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tokenizer::SpecialTokenNames;

/// One chat message, serialized exactly like the dicts transformers passes to the template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Plain text or a list of typed parts.
    pub content: Content,
}

/// A message's content: a string or a list of `{type: text|image}` parts (the multimodal form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// `"content": "..."`.
    Text(String),
    /// `"content": [{"type": "image"}, {"type": "text", "text": "..."}]`.
    Parts(Vec<Part>),
}

/// One part of a multimodal message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Part {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image placeholder; the template writes the model's image marker for it.
    Image,
}

impl Message {
    /// A message with plain string content.
    pub fn text(role: &str, text: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: Content::Text(text.into()),
        }
    }

    /// A message with a list of parts.
    pub fn parts(role: &str, parts: Vec<Part>) -> Self {
        Self {
            role: role.into(),
            content: Content::Parts(parts),
        }
    }
}

impl Part {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Part::Text { text: text.into() }
    }
}

/// A compiled chat template plus the special-token strings it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    names: SpecialTokenNames,
    source: PathBuf,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .finish()
    }
}

const TEMPLATE_NAME: &str = "chat_template";

impl ChatTemplate {
    /// Find and compile the template of a model directory, in transformers' order:
    /// `chat_template.jinja`, then `chat_template.json` (`{"chat_template": "..."}`), then the
    /// `chat_template` key of `tokenizer_config.json` (a string, or a list of named templates of
    /// which `default` is taken). Special token names come from `tokenizer_config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let tok_config_path = dir.join("tokenizer_config.json");
        let tok_config = if tok_config_path.is_file() {
            read_json(&tok_config_path)?
        } else {
            Value::Null
        };
        let names = SpecialTokenNames::from_tokenizer_config(&tok_config);

        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let text = std::fs::read_to_string(&jinja)
                .with_context(|| format!("reading {}", jinja.display()))?;
            return Self::new(text, names, jinja);
        }
        let json = dir.join("chat_template.json");
        if json.is_file() {
            let v = read_json(&json)?;
            let text = v
                .get("chat_template")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{}: no string field `chat_template`", json.display()))?;
            return Self::new(text.to_owned(), names, json);
        }
        match tok_config.get("chat_template") {
            Some(Value::String(s)) => Self::new(s.clone(), names, tok_config_path),
            Some(Value::Array(list)) => {
                let default = list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        anyhow!(
                            "{}: `chat_template` is a list without a `default` entry",
                            tok_config_path.display()
                        )
                    })?;
                Self::new(default.to_owned(), names, tok_config_path)
            }
            _ => bail!(
                "{}: no chat template (looked for chat_template.jinja, chat_template.json and \
                 `chat_template` in tokenizer_config.json)",
                dir.display()
            ),
        }
    }

    /// Compile a template from its source text; `source` names where it came from (errors).
    pub fn new(template: String, names: SpecialTokenNames, source: PathBuf) -> Result<Self> {
        let mut env = Environment::new();
        // transformers' jinja environment settings.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", |msg: String| -> Result<String, _> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(TEMPLATE_NAME, template)
            .map_err(|e| anyhow!("compiling chat template {}: {e:#}", source.display()))?;
        Ok(Self { env, names, source })
    }

    /// Render a conversation; `add_generation_prompt` appends the model-turn opener so the
    /// model answers next (what a prompt for sampling needs).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| anyhow!("chat template {}: {e:#}", self.source.display()))?;
        let n = &self.names;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => n.bos,
            eos_token => n.eos,
            pad_token => n.pad,
            unk_token => n.unk,
            boi_token => n.boi,
            eoi_token => n.eoi,
            image_token => n.image,
        })
        .map_err(|e| {
            anyhow!(
                "rendering chat template {} for {} messages: {e:#}",
                self.source.display(),
                messages.len()
            )
        })
    }

    /// Where the template was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {} as JSON", path.display()))
}

#[cfg(test)]
mod tests;

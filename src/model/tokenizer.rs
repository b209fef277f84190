//! The model's own tokenizer (`tokenizer.json`, Hugging Face `tokenizers` format) with Gemma 3's
//! special tokens looked up once.
//!
//! Why a wrapper: every caller needs the same two rules that are easy to get wrong —
//! text rendered by the chat template already starts with `<bos>`, so it is encoded *without*
//! the post-processor's specials (else the model sees `<bos><bos>`), and the reward scorer sees
//! completions decoded *with special tokens skipped* (no `<eos>` / `<end_of_turn>`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// Ids of the special tokens the rest of the program needs, read from the tokenizer itself.
///
/// Why optional fields: every Gemma 3 tokenizer has them, but a text-only or foreign tokenizer
/// may not; the code that needs one (image expansion, chat turns) says so with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of sequence (`<bos>`, id 2 in Gemma).
    pub bos: u32,
    /// End of sequence (`<eos>`, id 1 in Gemma).
    pub eos: u32,
    /// Padding (`<pad>`, id 0 in Gemma), when the tokenizer defines one.
    pub pad: Option<u32>,
    /// `<start_of_turn>`.
    pub start_of_turn: Option<u32>,
    /// `<end_of_turn>`: Gemma's instruction models stop on it as well as on `<eos>`.
    pub end_of_turn: Option<u32>,
    /// `<start_of_image>` (Gemma3Processor's `boi_token`): the image placeholder in chat text.
    pub boi: Option<u32>,
    /// `<end_of_image>` (`eoi_token`).
    pub eoi: Option<u32>,
    /// `<image_soft_token>` (`image_token`): replaced by the vision projector's output.
    pub image: Option<u32>,
}

/// Names of the special tokens as the tokenizer config spells them (Gemma 3 defaults).
///
/// Why kept as text: the processor expands the image placeholder at the text level, exactly
/// like transformers' Gemma3Processor does, so it needs the strings, not only the ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokenNames {
    /// `bos_token`.
    pub bos: String,
    /// `eos_token`.
    pub eos: String,
    /// `pad_token`.
    pub pad: String,
    /// `unk_token`.
    pub unk: String,
    /// `boi_token`.
    pub boi: String,
    /// `eoi_token`.
    pub eoi: String,
    /// `image_token`.
    pub image: String,
}

impl Default for SpecialTokenNames {
    fn default() -> Self {
        Self {
            bos: "<bos>".into(),
            eos: "<eos>".into(),
            pad: "<pad>".into(),
            unk: "<unk>".into(),
            boi: "<start_of_image>".into(),
            eoi: "<end_of_image>".into(),
            image: "<image_soft_token>".into(),
        }
    }
}

impl SpecialTokenNames {
    /// Read the names from a `tokenizer_config.json` value; absent keys keep Gemma's names.
    /// Accepts both a plain string and transformers 4.x's `{"content": "<bos>", ...}` form.
    pub fn from_tokenizer_config(config: &Value) -> Self {
        let mut names = Self::default();
        let get = |key: &str| -> Option<String> {
            match config.get(key)? {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
                _ => None,
            }
        };
        for (key, slot) in [
            ("bos_token", &mut names.bos),
            ("eos_token", &mut names.eos),
            ("pad_token", &mut names.pad),
            ("unk_token", &mut names.unk),
            ("boi_token", &mut names.boi),
            ("eoi_token", &mut names.eoi),
            ("image_token", &mut names.image),
        ] {
            if let Some(v) = get(key) {
                *slot = v;
            }
        }
        names
    }
}

/// A loaded tokenizer: the `tokenizers` pipeline plus Gemma's special tokens.
///
/// `Clone` copies the vocabulary (a few MB for Gemma's 262k tokens): share one behind an `Arc`
/// across stage workers, or clone it once per worker at start-up, never per item.
#[derive(Clone)]
pub struct GemmaTokenizer {
    inner: tokenizers::Tokenizer,
    names: SpecialTokenNames,
    special: SpecialTokens,
    source: PathBuf,
}

impl std::fmt::Debug for GemmaTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GemmaTokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("special", &self.special)
            .finish()
    }
}

impl GemmaTokenizer {
    /// Load `tokenizer.json` (and `tokenizer_config.json` for the special token names when
    /// present) from a model directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            let text = std::fs::read_to_string(&config_path)
                .with_context(|| format!("reading {}", config_path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("parsing {} as JSON", config_path.display()))?
        } else {
            Value::Null
        };
        Self::from_file(
            dir.join("tokenizer.json"),
            SpecialTokenNames::from_tokenizer_config(&config),
        )
    }

    /// Load a `tokenizer.json` file with the given special token names.
    pub fn from_file(path: impl AsRef<Path>, names: SpecialTokenNames) -> Result<Self> {
        let path = path.as_ref();
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("loading tokenizer {}: {e}", path.display()))?;
        let id = |name: &str| inner.token_to_id(name);
        let required = |name: &str, key: &str| {
            id(name).ok_or_else(|| {
                anyhow!(
                    "tokenizer {}: {key} {name:?} is not in the vocabulary",
                    path.display()
                )
            })
        };
        let special = SpecialTokens {
            bos: required(&names.bos, "bos_token")?,
            eos: required(&names.eos, "eos_token")?,
            pad: id(&names.pad),
            start_of_turn: id("<start_of_turn>"),
            end_of_turn: id("<end_of_turn>"),
            boi: id(&names.boi),
            eoi: id(&names.eoi),
            image: id(&names.image),
        };
        Ok(Self {
            inner,
            names,
            special,
            source: path.to_owned(),
        })
    }

    /// Encode text as it is, adding no special tokens: the right call for chat-template output,
    /// which already holds `<bos>` (special tokens written in the text, like `<start_of_turn>`,
    /// become their ids).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_inner(text, false)
    }

    /// Encode with the tokenizer's post-processor (Gemma: a leading `<bos>`), like
    /// `tokenizer(text)` in transformers; for raw text that did not go through the template.
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_inner(text, true)
    }

    fn encode_inner(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| anyhow!("tokenizing {:?}: {e}", preview(text)))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decode ids; `skip_special_tokens` drops every special token (what the reward scorer
    /// must see), otherwise they are written out (for logs and debugging).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow!("decoding {} ids: {e}", ids.len()))
    }

    /// Id of a token string (any vocabulary entry or added token).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens (the embedding table must have at least this
    /// many rows).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The special token ids.
    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// The special token names (as the template and the processor write them).
    pub fn names(&self) -> &SpecialTokenNames {
        &self.names
    }

    /// Whether an id is one of the tokenizer's special tokens (skipped on decode).
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .get_added_tokens_decoder()
            .get(&id)
            .is_some_and(|t| t.special)
    }

    /// The `tokenizers` object, for what this wrapper does not cover.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// The start of a text for error messages.
fn preview(text: &str) -> String {
    let mut s: String = text.chars().take(60).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// Error unless `ids` are all below `vocab_size`: checked where ids come from outside
/// (`--input-ids`), before they index an embedding table.
pub fn check_ids(ids: &[u32], vocab_size: usize) -> Result<()> {
    if let Some((pos, id)) = ids
        .iter()
        .enumerate()
        .find(|&(_, &id)| id as usize >= vocab_size)
    {
        bail!("token id {id} at position {pos} is outside the vocabulary (size {vocab_size})");
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;

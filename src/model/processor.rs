//! Gemma 3's processor: chat text -> input ids with each image placeholder expanded to the
//! model's image block, token type ids marking the image soft tokens, and the image
//! preprocessing of the Gemma 3 image processor (bilinear resize, /255, (x - 0.5) / 0.5).
//!
//! Why at the text level: transformers' Gemma3Processor replaces every `<start_of_image>` in the
//! rendered text with `\n\n<start_of_image>` + mm_tokens_per_image x `<image_soft_token>` +
//! `<end_of_image>\n\n` and tokenizes the result in one go; doing the same here gives the same
//! ids (the `\n\n` merge with neighbouring text depends on it), which the parity tests check.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images};
use serde_json::Value;

use super::chat_template::{ChatTemplate, Content, Message, Part};
use super::tokenizer::GemmaTokenizer;

/// The image processor's settings (`preprocessor_config.json`, or the `image_processor` object
/// of transformers 5's `processor_config.json`) plus the processor's `image_seq_length`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    /// Target height in pixels (`size.height`; 896 for MedGemma).
    pub height: usize,
    /// Target width in pixels (`size.width`).
    pub width: usize,
    /// Soft tokens per image (`image_seq_length` / config.json `mm_tokens_per_image`; 256).
    pub image_seq_length: usize,
    /// Resize at all.
    pub do_resize: bool,
    /// PIL resampling code (`resample`): 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box,
    /// 5 hamming. Gemma 3 uses 2.
    pub resample: u32,
    /// Multiply by `rescale_factor`.
    pub do_rescale: bool,
    /// 1/255.
    pub rescale_factor: f64,
    /// Subtract `image_mean`, divide by `image_std`.
    pub do_normalize: bool,
    /// Per-channel mean (0.5 for Gemma 3).
    pub image_mean: [f64; 3],
    /// Per-channel std (0.5 for Gemma 3).
    pub image_std: [f64; 3],
}

impl Default for ProcessorConfig {
    /// MedGemma-4B-IT's published settings.
    fn default() -> Self {
        Self {
            height: 896,
            width: 896,
            image_seq_length: 256,
            do_resize: true,
            resample: 2,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
        }
    }
}

impl ProcessorConfig {
    /// Read a model directory's processor settings. Looks at `processor_config.json`
    /// (transformers 5 nests the image processor there; 4.x keeps only `image_seq_length`),
    /// `preprocessor_config.json` (4.x) and `config.json` (`mm_tokens_per_image`); absent
    /// values keep MedGemma's defaults. Pan-and-scan is refused: its crops are not supported.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut cfg = Self::default();
        let mut found_image_processor = false;
        let mut seq_len = None;

        if let Some(model_cfg) = read_json_opt(&dir.join("config.json"))?
            && let Some(n) = model_cfg.get("mm_tokens_per_image").and_then(Value::as_u64)
        {
            seq_len = Some(n as usize);
        }
        let pre = dir.join("preprocessor_config.json");
        if let Some(v) = read_json_opt(&pre)? {
            cfg.apply_image_processor(&v)
                .with_context(|| format!("reading {}", pre.display()))?;
            found_image_processor = true;
        }
        let proc_path = dir.join("processor_config.json");
        if let Some(v) = read_json_opt(&proc_path)? {
            if let Some(ip) = v.get("image_processor") {
                cfg.apply_image_processor(ip)
                    .with_context(|| format!("reading {}", proc_path.display()))?;
                found_image_processor = true;
            }
            if let Some(n) = v.get("image_seq_length").and_then(Value::as_u64) {
                seq_len = Some(n as usize);
            }
        }
        if !found_image_processor && seq_len.is_none() {
            bail!(
                "{}: no processor settings (processor_config.json, preprocessor_config.json or \
                 config.json's mm_tokens_per_image)",
                dir.display()
            );
        }
        if let Some(n) = seq_len {
            cfg.image_seq_length = n;
        }
        ensure!(
            cfg.image_seq_length > 0 && cfg.height > 0 && cfg.width > 0,
            "{}: image size and image_seq_length must be positive",
            dir.display()
        );
        Ok(cfg)
    }

    fn apply_image_processor(&mut self, v: &Value) -> Result<()> {
        if let Some(size) = v.get("size") {
            let h = size.get("height").and_then(Value::as_u64);
            let w = size.get("width").and_then(Value::as_u64);
            match (h, w) {
                (Some(h), Some(w)) => {
                    self.height = h as usize;
                    self.width = w as usize;
                }
                _ => bail!("`size` must have `height` and `width`, got {size}"),
            }
        }
        let flag = |key: &str, slot: &mut bool| {
            if let Some(b) = v.get(key).and_then(Value::as_bool) {
                *slot = b;
            }
        };
        flag("do_resize", &mut self.do_resize);
        flag("do_rescale", &mut self.do_rescale);
        flag("do_normalize", &mut self.do_normalize);
        if let Some(r) = v.get("resample").and_then(Value::as_u64) {
            self.resample = r as u32;
            filter_of(self.resample)?;
        }
        if let Some(f) = v.get("rescale_factor").and_then(Value::as_f64) {
            self.rescale_factor = f;
        }
        for (key, slot) in [
            ("image_mean", &mut self.image_mean),
            ("image_std", &mut self.image_std),
        ] {
            match v.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) => *slot = [n.as_f64().unwrap_or(0.0); 3],
                Some(Value::Array(a)) if a.len() == 3 => {
                    for (s, x) in slot.iter_mut().zip(a) {
                        *s = x
                            .as_f64()
                            .ok_or_else(|| anyhow!("`{key}` must hold numbers, got {x}"))?;
                    }
                }
                Some(other) => bail!("`{key}` must be a number or 3 numbers, got {other}"),
            }
        }
        if v.get("do_pan_and_scan").and_then(Value::as_bool) == Some(true) {
            bail!("do_pan_and_scan is not supported (MedGemma does not use it)");
        }
        Ok(())
    }
}

fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v = serde_json::from_str(&text)
        .with_context(|| format!("parsing {} as JSON", path.display()))?;
    Ok(Some(v))
}

/// The fast_image_resize filter equal to a PIL resampling code (convolution filters, which PIL
/// uses with an antialiasing support that grows when downscaling).
fn filter_of(resample: u32) -> Result<ResizeAlg> {
    Ok(match resample {
        0 => ResizeAlg::Nearest,
        1 => ResizeAlg::Convolution(FilterType::Lanczos3),
        2 => ResizeAlg::Convolution(FilterType::Bilinear),
        3 => ResizeAlg::Convolution(FilterType::CatmullRom),
        4 => ResizeAlg::Convolution(FilterType::Box),
        5 => ResizeAlg::Convolution(FilterType::Hamming),
        other => bail!("unknown PIL resample code {other} (expected 0..=5)"),
    })
}

/// An 8-bit image, rows top to bottom, channels interleaved (`H x W x C`): what the image
/// loader and the shards hand over. Channels: 1 (grey), 2 (grey + alpha), 3 (RGB), 4 (RGBA).
#[derive(Debug, Clone, Copy)]
pub struct ImageU8<'a> {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Interleaved channels per pixel.
    pub channels: usize,
    /// `height * width * channels` bytes.
    pub data: &'a [u8],
}

/// Bring an 8-bit image to RGB like PIL's `convert("RGB")` (transformers' `do_convert_rgb`):
/// grey is repeated, alpha is dropped (not composited).
pub fn to_rgb(img: &ImageU8<'_>) -> Result<Vec<u8>> {
    let n = img.height * img.width;
    ensure!(
        img.data.len() == n * img.channels,
        "image buffer has {} bytes, expected {}x{}x{} = {}",
        img.data.len(),
        img.height,
        img.width,
        img.channels,
        n * img.channels
    );
    let mut out = Vec::with_capacity(n * 3);
    match img.channels {
        1 | 2 => {
            for px in img.data.chunks_exact(img.channels) {
                out.extend_from_slice(&[px[0]; 3]);
            }
        }
        3 => out.extend_from_slice(img.data),
        4 => {
            for px in img.data.chunks_exact(4) {
                out.extend_from_slice(&px[..3]);
            }
        }
        c => bail!("unsupported channel count {c} (expected 1, 2, 3 or 4)"),
    }
    Ok(out)
}

/// Preprocess one image like the Gemma 3 image processor: to RGB, resize to the configured
/// size with PIL-equivalent filtering on 8-bit values, rescale and normalize per channel.
/// Returns `[3, height, width]` f32 values, channel-first (the layout of `pixel_values`).
pub fn preprocess_image(img: &ImageU8<'_>, cfg: &ProcessorConfig) -> Result<Vec<f32>> {
    ensure!(
        img.height > 0 && img.width > 0,
        "empty image ({}x{})",
        img.height,
        img.width
    );
    let rgb = to_rgb(img)?;
    let (h, w, resized) = if cfg.do_resize && (img.height, img.width) != (cfg.height, cfg.width) {
        let src = images::ImageRef::new(img.width as u32, img.height as u32, &rgb, PixelType::U8x3)
            .map_err(|e| anyhow!("image buffer: {e}"))?;
        let mut dst = images::Image::new(cfg.width as u32, cfg.height as u32, PixelType::U8x3);
        let opts = ResizeOptions::new().resize_alg(filter_of(cfg.resample)?);
        Resizer::new()
            .resize(&src, &mut dst, &opts)
            .map_err(|e| anyhow!("resizing {}x{} image: {e}", img.height, img.width))?;
        (cfg.height, cfg.width, dst.into_vec())
    } else {
        (img.height, img.width, rgb)
    };
    let plane = h * w;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in resized.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let mut x = px[c] as f64;
            if cfg.do_rescale {
                x *= cfg.rescale_factor;
            }
            if cfg.do_normalize {
                x = (x - cfg.image_mean[c]) / cfg.image_std[c];
            }
            out[c * plane + i] = x as f32;
        }
    }
    Ok(out)
}

/// Token ids of a prompt and which of them are image soft tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Model input ids, image blocks expanded.
    pub input_ids: Vec<u32>,
    /// 1 where the token is an `<image_soft_token>` (its embedding is replaced by the vision
    /// projector's output and it attends bidirectionally inside its image), else 0 — the same
    /// as transformers' `token_type_ids` for Gemma 3.
    pub token_type_ids: Vec<u32>,
    /// Images the ids hold (each `image_seq_length` soft tokens).
    pub num_images: usize,
}

/// Tokenizer + chat template + image settings of one model: the whole text side of a prompt.
#[derive(Debug)]
pub struct Gemma3Processor {
    tokenizer: GemmaTokenizer,
    template: ChatTemplate,
    config: ProcessorConfig,
    full_image_sequence: String,
}

impl Gemma3Processor {
    /// Load tokenizer, chat template and processor settings from a model directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let tokenizer = GemmaTokenizer::from_dir(dir)?;
        let template = ChatTemplate::from_dir(dir)?;
        let config = ProcessorConfig::from_dir(dir)?;
        Self::new(tokenizer, template, config)
    }

    /// Assemble from parts; fails if the tokenizer lacks Gemma 3's image tokens.
    pub fn new(
        tokenizer: GemmaTokenizer,
        template: ChatTemplate,
        config: ProcessorConfig,
    ) -> Result<Self> {
        let names = tokenizer.names().clone();
        let s = tokenizer.special();
        ensure!(
            s.boi.is_some() && s.eoi.is_some() && s.image.is_some(),
            "tokenizer lacks an image token ({}, {} or {} is not in its vocabulary)",
            names.boi,
            names.eoi,
            names.image
        );
        let full_image_sequence = format!(
            "\n\n{}{}{}\n\n",
            names.boi,
            names.image.repeat(config.image_seq_length),
            names.eoi
        );
        Ok(Self {
            tokenizer,
            template,
            config,
            full_image_sequence,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &GemmaTokenizer {
        &self.tokenizer
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The image settings.
    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    /// Replace each image placeholder (`<start_of_image>`) of rendered chat text with the full
    /// image block; `num_images` must equal the placeholders (as transformers checks).
    pub fn expand_image_tokens(&self, text: &str, num_images: usize) -> Result<String> {
        let boi = &self.tokenizer.names().boi;
        let found = text.matches(boi.as_str()).count();
        ensure!(
            found == num_images,
            "the text has {found} {boi} placeholders but {num_images} images were given"
        );
        Ok(text.replace(boi.as_str(), &self.full_image_sequence))
    }

    /// Tokenize rendered chat text holding `num_images` placeholders: expand, encode without
    /// adding specials (the template wrote `<bos>`), mark image soft tokens.
    pub fn encode_text(&self, text: &str, num_images: usize) -> Result<Encoded> {
        let expanded = self.expand_image_tokens(text, num_images)?;
        let input_ids = self.tokenizer.encode(&expanded)?;
        let image_id = self.tokenizer.special().image.unwrap_or(u32::MAX);
        let token_type_ids: Vec<u32> = input_ids
            .iter()
            .map(|&id| u32::from(id == image_id))
            .collect();
        let soft = token_type_ids.iter().filter(|&&t| t == 1).count();
        ensure!(
            soft == num_images * self.config.image_seq_length,
            "{soft} image soft tokens after tokenizing, expected {} ({} images x {}): does the \
             text itself contain {}?",
            num_images * self.config.image_seq_length,
            num_images,
            self.config.image_seq_length,
            self.tokenizer.names().image
        );
        Ok(Encoded {
            input_ids,
            token_type_ids,
            num_images,
        })
    }

    /// Render a conversation with the model's template and encode it; the number of images is
    /// the number of image parts in the messages.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<(String, Encoded)> {
        let text = self.template.render(messages, add_generation_prompt)?;
        let enc = self.encode_text(&text, count_images(messages))?;
        Ok((text, enc))
    }

    /// Preprocess one image with this model's settings (see [`preprocess_image`]).
    pub fn preprocess_image(&self, img: &ImageU8<'_>) -> Result<Vec<f32>> {
        preprocess_image(img, &self.config)
    }
}

/// Image parts in a conversation.
pub fn count_images(messages: &[Message]) -> usize {
    messages
        .iter()
        .map(|m| match &m.content {
            Content::Text(_) => 0,
            Content::Parts(p) => p.iter().filter(|p| matches!(p, Part::Image)).count(),
        })
        .sum()
}

#[cfg(test)]
mod tests;

//! A prompt as a person gives it — a user message with an optional system message and image
//! file — turned into what the model takes: token ids through the snapshot's chat template and
//! processor, and image features through the vision tower (`medgrpo generate`, `logprobs`,
//! `loss`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;

use super::chat_template::{ChatTemplate, Message, Part};
use super::gemma3::Gemma3;
use super::processor::{Gemma3Processor, ImageU8};
use super::tokenizer::GemmaTokenizer;

/// Token ids of `prompt` (and `system`) with the chat template of the snapshot in `dir`, and the
/// generation prompt appended. With `has_image` the user turn starts with an image placeholder,
/// which [`Gemma3Processor`] expands to `\n\n<start_of_image>` + N × `<image_soft_token>` +
/// `<end_of_image>\n\n`, as the Hugging Face processor does.
pub fn chat_prompt_ids(
    tokenizer: &GemmaTokenizer,
    dir: &Path,
    prompt: &str,
    system: Option<&str>,
    has_image: bool,
) -> Result<Vec<u32>> {
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(Message::text("system", s));
    }
    let mut parts = Vec::new();
    if has_image {
        parts.push(Part::Image);
    }
    parts.push(Part::text(prompt));
    messages.push(Message::parts("user", parts));
    if has_image {
        // Gemma3Processor: image placeholder expanded at the text level, then tokenized.
        let proc = Gemma3Processor::from_dir(dir)?;
        let (_, enc) = proc.apply_chat_template(&messages, true)?;
        return Ok(enc.input_ids);
    }
    let template = ChatTemplate::from_dir(dir)?;
    tokenizer.encode(&template.render(&messages, true)?)
}

/// The projector output for the image file at `path`, flattened to `[tokens, hidden]`: the
/// image decoded, preprocessed with the processor settings of the snapshot in `dir`, and run
/// through `model`'s vision tower.
pub fn image_features<B: Backend>(
    model: &Gemma3<B>,
    dir: &Path,
    path: &Path,
) -> Result<Tensor<B, 2>> {
    let Some(v) = &model.config.vision else {
        bail!("this model is text-only: --image is not supported")
    };
    let proc = Gemma3Processor::from_dir(dir)?;
    if (proc.config().height, proc.config().width) != (v.image_size, v.image_size) {
        bail!(
            "processor resizes to {}x{} but the vision tower takes {}x{}",
            proc.config().height,
            proc.config().width,
            v.image_size,
            v.image_size
        );
    }
    let px = load_pixels::<B>(path, &proc, &model.device())?;
    let f = model.image_features(px)?;
    let [n, t, d] = f.dims();
    Ok(f.reshape([n * t, d]))
}

/// Decodes an image file and preprocesses it like the Gemma 3 image processor (the snapshot's
/// processor settings: RGB, bilinear resize, rescale, normalize) into `[1, 3, H, W]`.
pub fn load_pixels<B: Backend>(
    path: &Path,
    proc: &Gemma3Processor,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let img = image::open(path)
        .with_context(|| format!("decoding image {}", path.display()))?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let view = ImageU8 {
        height: h,
        width: w,
        channels: 3,
        data: img.as_raw(),
    };
    let px = proc
        .preprocess_image(&view)
        .with_context(|| format!("preprocessing {}", path.display()))?;
    let cfg = proc.config();
    Ok(Tensor::from_data(
        TensorData::new(px, [1, 3, cfg.height, cfg.width]),
        device,
    ))
}

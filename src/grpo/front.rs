//! The front of every chain, built once: source → loader → prompt. Training draws the records
//! in its seeded epoch order ([`run_order`]); evaluation reads a split in file order
//! ([`file_order`]); both then load the image ([`LoaderStage`]) and build the prompt and the
//! answer key ([`PromptStage`]) with the same code, so a prompt and its reward mean the same in
//! both.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};

use super::epochs::{self, Cursor};
use super::messages::{Drawn, Loaded, Prompted};
use super::prompt::{PromptBuilder, PromptInput};
use super::reward::Reference;
use crate::config::{Config, StageSettings};
use crate::data::loader::Loader;
use crate::data::record::Record;
use crate::model::chat_template::ChatTemplate;
use crate::model::processor::{Gemma3Processor, ProcessorConfig};
use crate::model::tokenizer::GemmaTokenizer;
use crate::stages::{ErrorPolicy, Pipeline, Port, Stage, StageOptions};

/// What the front needs from the model: its processor (tokenizer, chat template, image
/// settings), the prompt builder on it, and the loader stage for its input size.
pub struct FrontEnd {
    /// The snapshot's processor.
    pub processor: Arc<Gemma3Processor>,
    /// The training prompt builder.
    pub builder: Arc<PromptBuilder>,
    /// The loader stage.
    pub loader: LoaderStage,
}

impl FrontEnd {
    /// The front of the model `config.model.path`, whose vision tower takes `image_size`
    /// squares (`None`: a text-only model, whose questions with an image are refused when
    /// `refuse_images`, else asked without it).
    pub fn new(config: &Config, image_size: Option<u32>, refuse_images: bool) -> Result<Self> {
        let dir = Path::new(&config.model.path);
        let processor = Arc::new(match image_size {
            Some(_) => Gemma3Processor::from_dir(dir)?,
            // A text-only checkpoint (Gemma3ForCausalLM) ships no image processor settings.
            None => Gemma3Processor::new(
                GemmaTokenizer::from_dir(dir)?,
                ChatTemplate::from_dir(dir)?,
                ProcessorConfig::default(),
            )?,
        });
        let loader = match image_size {
            Some(size) => LoaderStage::vision(Arc::new(Loader::open(config, size)?)),
            None => LoaderStage::text_only(&config.model.path, refuse_images),
        };
        Ok(Self {
            builder: Arc::new(PromptBuilder::new(processor.clone(), config.prompt.clone())),
            processor,
            loader,
        })
    }
}

/// `count` records of a training run from `start` on, epoch after epoch in the seeded order of
/// [`epochs::draws`], each with its cursor and its draw number (epoch × split size + position),
/// which seeds its completions and survives a resume.
pub fn run_order(
    records: Vec<Arc<Record>>,
    seed: u64,
    start: Cursor,
    count: usize,
) -> impl Iterator<Item = Drawn> + Send + 'static {
    let len = records.len() as u64;
    epochs::draws(records.len(), seed, start)
        .take(count)
        .map(move |(cursor, i)| Drawn {
            record: records[i].clone(),
            cursor,
            draw: cursor.epoch * len + cursor.position - 1,
        })
}

/// The records of a split in file order (evaluation), numbered from 0.
pub fn file_order(records: Vec<Arc<Record>>) -> impl Iterator<Item = Drawn> + Send + 'static {
    records.into_iter().enumerate().map(|(i, record)| Drawn {
        record,
        cursor: Cursor::default(),
        draw: i as u64,
    })
}

/// The loader stage: the image of each record, as stored (u8, at the tower's size), when the
/// model has a vision tower.
#[derive(Clone)]
pub struct LoaderStage {
    /// The image source; `None` for a text-only model.
    loader: Option<Arc<Loader>>,
    /// For a text-only model: refuse questions that have an image (training, naming this
    /// model), or ask them without it (`None`: evaluation).
    refuse_images_for: Option<String>,
}

impl LoaderStage {
    /// A loader for a vision model.
    pub fn vision(loader: Arc<Loader>) -> Self {
        Self {
            loader: Some(loader),
            refuse_images_for: None,
        }
    }

    /// A loader for the text-only model `model`: questions with an image are refused when
    /// `refuse_images` (training), else asked without their image (evaluation).
    pub fn text_only(model: &str, refuse_images: bool) -> Self {
        Self {
            loader: None,
            refuse_images_for: refuse_images.then(|| model.to_string()),
        }
    }
}

impl Stage for LoaderStage {
    type In = Drawn;
    type Out = Loaded;

    fn process(&mut self, _seq: u64, drawn: Drawn) -> Result<Option<Loaded>> {
        let pixels = match (&self.loader, &self.refuse_images_for) {
            (Some(l), _) => Some(l.record_pixels(&drawn.record)?),
            (None, Some(model)) if !drawn.record.is_text_only() => bail!(
                "question {}: has an image, but the model {model} is text-only",
                drawn.record.id
            ),
            (None, _) => None,
        };
        Ok(Some(Loaded { drawn, pixels }))
    }
}

/// The prompt stage: the model's chat template around the question (image block included when
/// the item has pixels), and the answer key of the rewards.
pub struct PromptStage(pub Arc<PromptBuilder>);

impl Stage for PromptStage {
    type In = Loaded;
    type Out = Prompted;

    fn process(&mut self, _seq: u64, item: Loaded) -> Result<Option<Prompted>> {
        let Loaded { drawn, pixels } = item;
        let r = &drawn.record;
        let built = self.0.build(&PromptInput {
            has_image: pixels.is_some(),
            ..PromptInput::from(&**r)
        })?;
        let reference = Reference::for_record(built.correct_letter, r)?;
        Ok(Some(Prompted {
            question_id: r.id.clone(),
            prompt_ids: built.input_ids,
            pixels,
            reference: Arc::new(reference),
            cursor: drawn.cursor,
            draw: drawn.draw,
        }))
    }
}

/// Source → loader → prompt on `p`: `drawn` as the source, then `end`'s loader and prompt
/// builder, with the stages' workers and capacities from `config.stages`, bad items skipped or
/// fatal per `data.on_bad_item`.
pub fn front(
    p: &mut Pipeline,
    config: &Config,
    drawn: impl Iterator<Item = Drawn> + Send + 'static,
    end: &FrontEnd,
) -> Port<Prompted> {
    let (loader, builder) = (end.loader.clone(), end.builder.clone());
    let options =
        |name: &str, default: StageSettings| StageOptions::from(config.stages.get(name, default));
    let bad_item = ErrorPolicy::from(config.data.on_bad_item);
    let source = p.source_with(
        "source",
        options("source", StageSettings::new(1, 16)),
        drawn.map(Ok),
    );
    let loaded = p.stage(
        "loader",
        options("loader", StageSettings::new(2, 16)).on_error(bad_item),
        source,
        move |_| loader.clone(),
    );
    p.stage(
        "prompt",
        options("prompt", StageSettings::new(1, 16)).on_error(bad_item),
        loaded,
        move |_| PromptStage(builder.clone()),
    )
}

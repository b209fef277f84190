//! Synthetic radiographs and multiple-choice questions about them in the ReXVQA JSON format,
//! whose answer only the pixels tell: where a focal opacity is (`location`), how large it is
//! (`extent`), or how dense a diffuse haze over both lungs is (`haze`, the demo's task). The
//! answer is drawn uniformly and, for `location`, the option order shuffled per question, so
//! neither the letter nor the text position gives it away.

use std::path::Path;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};

pub use crate::config::DemoTask as Task;

/// The four zones a finding can be in, with where they sit on a PA film (the patient's
/// right is the image's left).
pub const ZONES: [(&str, f32, f32); 4] = [
    ("right upper zone", 0.30, 0.35),
    ("right lower zone", 0.30, 0.68),
    ("left upper zone", 0.70, 0.35),
    ("left lower zone", 0.70, 0.68),
];

/// One generated question.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthQuestion {
    /// Question id, `demo-<split>-<n>`.
    pub id: String,
    /// Index into [`ZONES`] of the opacity.
    pub zone: usize,
    /// Index of the right answer among the task's classes ([`ZONES`] or [`EXTENTS`]).
    pub answer: usize,
    /// Correct option letter.
    pub letter: char,
    /// Options as "A. right upper zone", in shuffled order.
    pub options: Vec<String>,
    /// Image file name relative to the dataset directory.
    pub image: String,
}

fn seeded(seed: u64, index: u64, purpose: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (purpose << 56))
}

/// Extent classes, with the opacity radius as a fraction of the image side (0: none).
pub const EXTENTS: [(&str, f32); 4] = [
    ("none", 0.0),
    ("small", 0.08),
    ("moderate", 0.14),
    ("large", 0.22),
];

/// Haze classes, with the grey levels added over both lung fields (before a ±15% jitter).
pub const HAZES: [(&str, f32); 4] = [
    ("none", 0.0),
    ("mild", 25.0),
    ("moderate", 50.0),
    ("severe", 75.0),
];

/// Draws a grey `size`×`size` radiograph-like image with a bright opacity centred in `zone`.
pub fn render(size: u32, zone: usize, rng: &mut ChaCha8Rng) -> image::GrayImage {
    let radius = rng.random_range(0.07..0.11);
    render_opacity(size, zone, radius, rng)
}

/// [`render`] with the opacity's radius given as a fraction of the side (0: no opacity).
pub fn render_opacity(
    size: u32,
    zone: usize,
    radius: f32,
    rng: &mut ChaCha8Rng,
) -> image::GrayImage {
    render_scene(size, zone, radius, 0.0, rng)
}

/// [`render_opacity`] with both lung fields brightened by `haze` grey levels, smoothly towards
/// their edges like the lungs' own shading.
pub fn render_scene(
    size: u32,
    zone: usize,
    radius: f32,
    haze: f32,
    rng: &mut ChaCha8Rng,
) -> image::GrayImage {
    let s = size as f32;
    let (zx, zy) = (ZONES[zone].1, ZONES[zone].2);
    let (ox, oy) = (
        (zx + rng.random_range(-0.06..0.06)) * s,
        (zy + rng.random_range(-0.06..0.06)) * s,
    );
    let radius = (radius * s).max(1e-3);
    let brightness = if radius > 1e-3 {
        rng.random_range(70.0..110.0f32)
    } else {
        0.0
    };
    let rib_phase = rng.random_range(0.0..std::f32::consts::TAU);
    image::GrayImage::from_fn(size, size, |x, y| {
        let (u, v) = (x as f32 / s, y as f32 / s);
        // Soft tissue and bone background, darker lungs either side of a bright mediastinum.
        let mut g = 150.0;
        for cx in [0.30f32, 0.70] {
            let d = ((u - cx) / 0.18).powi(2) + ((v - 0.52) / 0.32).powi(2);
            if d < 1.0 {
                g -= (95.0 - haze) * (1.0 - d).sqrt();
            }
        }
        g += 12.0 * ((v * 40.0 + rib_phase).sin() * (1.0 - (u - 0.5).abs() * 2.0)).max(0.0);
        let d2 = ((x as f32 - ox).powi(2) + (y as f32 - oy).powi(2)) / (radius * radius);
        g += brightness * (-d2).exp();
        g += rng.random_range(-8.0..8.0);
        image::Luma([g.clamp(0.0, 255.0) as u8])
    })
}

/// Writes `n` questions with shuffled options and their PNGs under `dir/images`, plus
/// `dir/<split>.json` in the reader's format, and returns the questions.
pub fn generate(
    dir: &Path,
    split: &str,
    n: usize,
    size: u32,
    seed: u64,
) -> Result<Vec<SynthQuestion>> {
    generate_with(dir, split, n, size, seed, Task::Location, true)
}

/// [`generate`] for a given task, with the option order either shuffled per question or
/// fixed (in [`ZONES`] or [`EXTENTS`] order). Either way the answer is drawn uniformly, so
/// only the pixels tell it.
pub fn generate_with(
    dir: &Path,
    split: &str,
    n: usize,
    size: u32,
    seed: u64,
    task: Task,
    shuffle_options: bool,
) -> Result<Vec<SynthQuestion>> {
    let images = dir.join("images");
    std::fs::create_dir_all(&images)
        .with_context(|| format!("cannot create {}", images.display()))?;
    let split_salt = split
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(b as u64));
    let mut questions = Vec::with_capacity(n);
    let mut dataset = Map::new();
    for i in 0..n as u64 {
        let mut rng = seeded(seed ^ split_salt, i, 1);
        let zone = rng.random_range(0..ZONES.len());
        let extent = match task {
            Task::Location => None,
            Task::Extent | Task::Haze => Some(rng.random_range(0..EXTENTS.len())),
        };
        let answer = extent.unwrap_or(zone);
        let (options, letter) = options(task, answer, shuffle_options, &mut rng);
        let id = format!("demo-{split}-{i:05}");
        let image = format!("images/{id}.png");
        let mut img_rng = seeded(seed ^ split_salt, i, 2);
        scene(task, extent, zone, size, &mut img_rng)
            .save(dir.join(&image))
            .with_context(|| format!("cannot write {image}"))?;
        let mut record = report(task, extent, zone);
        record["options"] = json!(options);
        record["correct_answer"] = json!(letter.to_string());
        record["ImagePath"] = json!([image]);
        dataset.insert(id.clone(), record);
        questions.push(SynthQuestion {
            id,
            zone,
            answer,
            letter,
            options,
            image,
        });
    }
    let path = dir.join(format!("{split}.json"));
    let text = serde_json::to_string_pretty(&Value::Object(dataset))?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(questions)
}

/// The options `A. …` to `D. …` of a question about `task` (shuffled when asked, with `rng`),
/// and the letter of class `answer`.
fn options(task: Task, answer: usize, shuffle: bool, rng: &mut ChaCha8Rng) -> (Vec<String>, char) {
    let classes: Vec<&str> = match task {
        Task::Location => ZONES.iter().map(|z| z.0).collect(),
        Task::Extent => EXTENTS.iter().map(|e| e.0).collect(),
        Task::Haze => HAZES.iter().map(|e| e.0).collect(),
    };
    let mut order: Vec<usize> = (0..classes.len()).collect();
    if shuffle {
        for k in (1..order.len()).rev() {
            order.swap(k, rng.random_range(0..=k));
        }
    }
    let letters = ['A', 'B', 'C', 'D'];
    let options = order
        .iter()
        .zip(letters)
        .map(|(&c, l)| format!("{l}. {}", capitalize(classes[c])))
        .collect();
    let at = order
        .iter()
        .position(|&c| c == answer)
        .expect("answer among options");
    (options, letters[at])
}

/// The image of a question: a haze of the class's density, a focal opacity of the class's
/// size, or (location) an opacity of random size in `zone`.
fn scene(
    task: Task,
    extent: Option<usize>,
    zone: usize,
    size: u32,
    rng: &mut ChaCha8Rng,
) -> image::GrayImage {
    match (task, extent) {
        (Task::Haze, Some(e)) => {
            let haze = HAZES[e].1 * rng.random_range(0.85..1.15f32);
            render_scene(size, zone, 0.0, haze, rng)
        }
        (_, Some(e)) => {
            let radius = EXTENTS[e].1 * rng.random_range(0.9..1.1f32);
            render_opacity(size, zone, radius, rng)
        }
        (_, None) => render(size, zone, rng),
    }
}

/// A question's record without its options, answer and image: the question text, the report
/// (Findings, Impression, the explanation) and its category and task name.
fn report(task: Task, extent: Option<usize>, zone: usize) -> Value {
    let zone_name = ZONES[zone].0;
    let (question, finding, category, task_name) = match (task, extent) {
        (_, None) => (
            "Where is the focal opacity on this chest radiograph?",
            format!("There is a focal opacity in the {zone_name}."),
            "localization",
            "demo-opacity-zone",
        ),
        (Task::Haze, Some(e)) => (
            "How severe is the diffuse airspace opacity on this chest radiograph?",
            match e {
                0 => "The lungs are clear.".to_string(),
                _ => format!(
                    "There is {} diffuse bilateral airspace opacity.",
                    HAZES[e].0
                ),
            },
            "severity",
            "demo-opacity-haze",
        ),
        (_, Some(0)) => (
            "How large is the focal opacity on this chest radiograph?",
            "There is no focal opacity.".to_string(),
            "severity",
            "demo-opacity-extent",
        ),
        (_, Some(e)) => (
            "How large is the focal opacity on this chest radiograph?",
            format!(
                "There is a {} focal opacity in the {zone_name}.",
                EXTENTS[e].0
            ),
            "severity",
            "demo-opacity-extent",
        ),
    };
    let impression = match (task, extent) {
        (_, Some(0)) => "No acute cardiopulmonary process.".to_string(),
        (Task::Haze, _) => {
            "Diffuse airspace disease, likely pulmonary oedema or infection.".to_string()
        }
        _ => format!("Opacity in the {zone_name}, likely pneumonia."),
    };
    json!({
        "question": question,
        "options": [],
        "correct_answer": "",
        "correct_answer_explanation": finding,
        "ImagePath": [],
        "Indication": "Cough and fever.",
        "Findings": format!("{finding} No pleural effusion or pneumothorax."),
        "Impression": impression,
        "category": category,
        "task_name": task_name,
    })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;

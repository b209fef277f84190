//! Synthetic radiographs with one focal opacity in one of four lung zones, and multiple-choice
//! questions in the ReXVQA JSON format asking where it is. The option order is shuffled per
//! question, so neither the letter nor the text position gives the answer away: only the
//! pixels do.

use std::path::Path;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};

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

/// Draws a grey `size`×`size` radiograph-like image with a bright opacity centred in `zone`.
pub fn render(size: u32, zone: usize, rng: &mut ChaCha8Rng) -> image::GrayImage {
    let s = size as f32;
    let (zx, zy) = (ZONES[zone].1, ZONES[zone].2);
    let (ox, oy) = (
        (zx + rng.random_range(-0.06..0.06)) * s,
        (zy + rng.random_range(-0.06..0.06)) * s,
    );
    let radius = rng.random_range(0.07..0.11) * s;
    let brightness = rng.random_range(70.0..110.0f32);
    let rib_phase = rng.random_range(0.0..std::f32::consts::TAU);
    image::GrayImage::from_fn(size, size, |x, y| {
        let (u, v) = (x as f32 / s, y as f32 / s);
        // Soft tissue and bone background, darker lungs either side of a bright mediastinum.
        let mut g = 150.0;
        for cx in [0.30f32, 0.70] {
            let d = ((u - cx) / 0.18).powi(2) + ((v - 0.52) / 0.32).powi(2);
            if d < 1.0 {
                g -= 95.0 * (1.0 - d).sqrt();
            }
        }
        g += 12.0 * ((v * 40.0 + rib_phase).sin() * (1.0 - (u - 0.5).abs() * 2.0)).max(0.0);
        let d2 = ((x as f32 - ox).powi(2) + (y as f32 - oy).powi(2)) / (radius * radius);
        g += brightness * (-d2).exp();
        g += rng.random_range(-8.0..8.0);
        image::Luma([g.clamp(0.0, 255.0) as u8])
    })
}

/// Writes `n` questions and their PNGs under `dir/images`, and returns the dataset object
/// (keyed by question id) as the reader expects it.
pub fn generate(
    dir: &Path,
    split: &str,
    n: usize,
    size: u32,
    seed: u64,
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
        let mut order: Vec<usize> = (0..ZONES.len()).collect();
        for k in (1..order.len()).rev() {
            order.swap(k, rng.random_range(0..=k));
        }
        let letters = ['A', 'B', 'C', 'D'];
        let options: Vec<String> = order
            .iter()
            .zip(letters)
            .map(|(&z, l)| format!("{l}. {}", capitalize(ZONES[z].0)))
            .collect();
        let letter = letters[order
            .iter()
            .position(|&z| z == zone)
            .expect("zone among options")];
        let id = format!("demo-{split}-{i:05}");
        let image = format!("images/{id}.png");
        let mut img_rng = seeded(seed ^ split_salt, i, 2);
        render(size, zone, &mut img_rng)
            .save(dir.join(&image))
            .with_context(|| format!("cannot write {image}"))?;
        let zone_name = ZONES[zone].0;
        dataset.insert(
            id.clone(),
            json!({
                "question": "Where is the focal opacity on this chest radiograph?",
                "options": options,
                "correct_answer": letter.to_string(),
                "correct_answer_explanation": format!("There is a focal opacity in the {zone_name}."),
                "ImagePath": [image],
                "Indication": "Cough and fever.",
                "Findings": format!("Focal airspace opacity in the {zone_name}. No pleural effusion or pneumothorax."),
                "Impression": format!("Opacity in the {zone_name}, likely pneumonia."),
                "category": "localization",
                "task_name": "demo-opacity-zone",
            }),
        );
        questions.push(SynthQuestion {
            id,
            zone,
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

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean brightness of the image inside each zone's window.
    fn zone_means(img: &image::GrayImage) -> Vec<f32> {
        let s = img.width() as f32;
        ZONES
            .iter()
            .map(|&(_, zx, zy)| {
                let (x0, y0) = ((zx * s) as i32, (zy * s) as i32);
                let r = (0.08 * s) as i32;
                let mut sum = 0.0;
                let mut n = 0.0;
                for y in y0 - r..=y0 + r {
                    for x in x0 - r..=x0 + r {
                        sum += img.get_pixel(x as u32, y as u32).0[0] as f32;
                        n += 1.0;
                    }
                }
                sum / n
            })
            .collect()
    }

    #[test]
    fn the_answer_is_in_the_pixels_and_nowhere_else() {
        let dir = tempfile::tempdir().unwrap();
        let qs = generate(dir.path(), "train", 40, 64, 7).unwrap();
        let mut letters = std::collections::BTreeSet::new();
        for q in &qs {
            let img = image::open(dir.path().join(&q.image)).unwrap().to_luma8();
            let means = zone_means(&img);
            let brightest = (0..4)
                .max_by(|&a, &b| means[a].total_cmp(&means[b]))
                .unwrap();
            assert_eq!(brightest, q.zone, "{}: {means:?}", q.id);
            let opt = &q.options[(q.letter as u8 - b'A') as usize];
            assert!(opt.to_lowercase().contains(ZONES[q.zone].0), "{opt}");
            letters.insert(q.letter);
        }
        assert_eq!(
            letters.len(),
            4,
            "correct letters vary, so the letter alone tells nothing"
        );
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("train.json")).unwrap())
                .unwrap();
        assert_eq!(json.as_object().unwrap().len(), 40);
        assert_eq!(
            json["demo-train-00000"]["correct_answer"],
            qs[0].letter.to_string()
        );
    }

    #[test]
    fn generation_is_reproducible_and_splits_differ() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let qa = generate(a.path(), "train", 5, 32, 3).unwrap();
        let qb = generate(b.path(), "train", 5, 32, 3).unwrap();
        assert_eq!(qa, qb);
        for q in &qa {
            assert_eq!(
                std::fs::read(a.path().join(&q.image)).unwrap(),
                std::fs::read(b.path().join(&q.image)).unwrap()
            );
        }
        let qv = generate(a.path(), "val", 5, 32, 3).unwrap();
        assert_ne!(
            qa.iter().map(|q| q.zone).collect::<Vec<_>>(),
            qv.iter().map(|q| q.zone).collect::<Vec<_>>()
        );
    }
}

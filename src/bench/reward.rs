//! `medgrpo bench reward`: scoring throughput on one core, with realistic sizes.

use std::time::Instant;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::RewardsConfig;
use crate::grpo::reward::{Reference, score};

const BENCH_WORDS: &[&str] = &[
    "right",
    "left",
    "pleural",
    "effusion",
    "opacity",
    "consolidation",
    "lower",
    "upper",
    "lobe",
    "cardiomegaly",
    "mild",
    "moderate",
    "small",
    "large",
    "pneumothorax",
    "atelectasis",
    "edema",
    "pulmonary",
    "vascular",
    "congestion",
    "heart",
    "size",
    "normal",
    "mediastinum",
    "hilar",
    "basilar",
    "airspace",
    "disease",
    "no",
    "acute",
    "findings",
    "is",
    "the",
    "there",
    "with",
    "likely",
    "pneumonia",
    "silhouette",
    "costophrenic",
    "angle",
    "blunting",
    "interval",
    "change",
    "stable",
    "tube",
    "line",
    "tip",
    "projects",
    "over",
    "nodule",
    "mass",
    "fracture",
    "rib",
];

fn bench_text(rng: &mut ChaCha8Rng, chars: usize) -> String {
    let mut s = String::new();
    while s.len() < chars {
        if !s.is_empty() {
            s.push_str(if rng.random_bool(0.1) { ". " } else { " " });
        }
        s.push_str(BENCH_WORDS[rng.random_range(0..BENCH_WORDS.len())]);
    }
    s
}

/// `medgrpo bench reward`: scoring throughput on one core, with realistic sizes (~200-char
/// completions, ~300-char reports, ~120-char explanations, G = 8). Prints completions per
/// second for scoring alone and with the per-question preparation amortized over G.
pub fn bench_reward() -> Result<()> {
    const QUESTIONS: usize = 256;
    const G: usize = 8;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut questions = Vec::with_capacity(QUESTIONS);
    for _ in 0..QUESTIONS {
        let letter = (b'A' + rng.random_range(0..5u8)) as char;
        let explanation = bench_text(&mut rng, 120);
        let findings = bench_text(&mut rng, 200);
        let impression = bench_text(&mut rng, 100);
        let completions: Vec<String> = (0..G)
            .map(|_| {
                let l = (b'A' + rng.random_range(0..5u8)) as char;
                format!(
                    "<start_working_out>{}<end_working_out><SOLUTION>{l} - {}</SOLUTION>",
                    bench_text(&mut rng, 105),
                    bench_text(&mut rng, 25)
                )
            })
            .collect();
        questions.push((letter, explanation, findings, impression, completions));
    }
    let mean_len = questions
        .iter()
        .flat_map(|q| q.4.iter().map(|c| c.chars().count()))
        .sum::<usize>() as f64
        / (QUESTIONS * G) as f64;
    let report_len = questions
        .iter()
        .map(|q| q.2.len() + 1 + q.3.len())
        .sum::<usize>() as f64
        / QUESTIONS as f64;
    let cfg = RewardsConfig::default();
    let prepare_all = || -> Result<Vec<Reference>> {
        questions
            .iter()
            .map(|(l, e, f, i, _)| Reference::new(*l, e, f, i))
            .collect()
    };
    let refs = prepare_all()?;
    let mut checksum = 0.0;
    let run_for = |f: &mut dyn FnMut() -> usize| -> f64 {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed().as_secs_f64() < 2.0 {
            n += f();
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    let scoring = run_for(&mut || {
        for (r, q) in refs.iter().zip(&questions) {
            for c in &q.4 {
                checksum += score(c, r, &cfg).total;
            }
        }
        QUESTIONS * G
    });
    let with_prep = run_for(&mut || {
        let refs = prepare_all().expect("bench references");
        for (r, q) in refs.iter().zip(&questions) {
            for c in &q.4 {
                checksum += score(c, r, &cfg).total;
            }
        }
        QUESTIONS * G
    });
    println!(
        "reward scoring, 1 thread, {} questions x G={G}, completions {mean_len:.0} chars, reports {report_len:.0} chars",
        QUESTIONS
    );
    println!("  scoring only:                 {scoring:>10.0} completions/s per core");
    println!(
        "  with reference preparation:   {with_prep:>10.0} completions/s per core (1 per {G})"
    );
    println!(
        "  target >= 50000/s: {}   (checksum {checksum:.3})",
        if scoring.min(with_prep) >= 50_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

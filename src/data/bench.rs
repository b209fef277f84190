//! `medgrpo bench shard` / `medgrpo bench loader`: the sharder's throughput and memory on
//! synthetic 16-bit radiograph-sized PNGs, side by side with the Python PIL baseline
//! (`scripts/pil_baseline.py`, what the original did), and the loader's random access rate.
//!
//! Knobs (environment, since `bench` takes only a name): `MEDGRPO_BENCH_N` images (default
//! 24), `MEDGRPO_BENCH_DIR` where the synthetic PNGs are kept between runs (default
//! `$TMPDIR/medgrpo-bench-shard`), `MEDGRPO_PYTHON` the interpreter for the baseline
//! (default `python3`; skipped with a note if it cannot run), `MEDGRPO_BENCH_ROUNDS` rounds of
//! Rust-then-PIL per worker count (default 3; the machine is shared, so pairs are compared).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::loader::{ShardStore, to_pixels};
use super::record::image_key;
use super::shard::format::read_manifest;
use super::shard::{BuildOptions, build};
use crate::config::Config;

/// Width and height of the synthetic images (a typical CXR detector size).
pub const SYNTH_W: u32 = 2000;
/// Height, see [`SYNTH_W`].
pub const SYNTH_H: u32 = 2500;

/// A synthetic 16-bit chest-radiograph-like image: smooth anatomy-like blobs (two dark lung
/// fields, a bright mediastinum and diaphragm, a vertical gradient) plus per-pixel noise,
/// seeded so the same `seed` gives the same image. Smooth content + noise makes PNG
/// compression and min-max conversion behave like real 12–16-bit data.
pub fn synthetic_cxr(width: u32, height: u32, seed: u64) -> Vec<u16> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let jitter = |r: &mut ChaCha8Rng| r.random_range(-0.04f32..0.04);
    // (cx, cy, sx, sy, amplitude) in normalised coordinates.
    let blobs = [
        (0.32 + jitter(&mut rng), 0.45, 0.13, 0.25, -9000.0f32),
        (0.68 + jitter(&mut rng), 0.45, 0.13, 0.25, -9000.0),
        (0.50, 0.40 + jitter(&mut rng), 0.07, 0.30, 7000.0),
        (0.50, 0.95, 0.45, 0.10, 9000.0),
    ];
    let base = 30000.0 + rng.random_range(-2000.0f32..2000.0);
    let mut out = Vec::with_capacity(width as usize * height as usize);
    for y in 0..height {
        let fy = y as f32 / height as f32;
        for x in 0..width {
            let fx = x as f32 / width as f32;
            let mut v = base + 6000.0 * fy;
            for &(cx, cy, sx, sy, a) in &blobs {
                let dx = (fx - cx) / sx;
                let dy = (fy - cy) / sy;
                v += a * (-(dx * dx + dy * dy)).exp();
            }
            // Noise: sum of two uniforms (triangular), sigma about 400 grey levels.
            v += rng.random_range(-700.0f32..700.0) + rng.random_range(-700.0f32..700.0);
            out.push(v.clamp(0.0, 65535.0) as u16);
        }
    }
    out
}

/// Writes `n` synthetic PNGs into `dir` (kept if already there), returns their paths.
pub fn ensure_synthetic_pngs(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        let p = dir.join(format!("synth_{i:05}.png"));
        if !p.exists() {
            let px = synthetic_cxr(SYNTH_W, SYNTH_H, i as u64);
            let img = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(SYNTH_W, SYNTH_H, px)
                .expect("buffer size");
            let tmp = dir.join(format!("synth_{i:05}.png.tmp"));
            img.save_with_format(&tmp, image::ImageFormat::Png)?;
            std::fs::rename(&tmp, &p)?;
        }
        paths.push(p);
    }
    Ok(paths)
}

/// Peak resident memory of this process (VmHWM), in bytes.
pub fn peak_rss() -> u64 {
    proc_status_kb("VmHWM:") * 1024
}

/// Current resident memory (VmRSS), in bytes.
pub fn current_rss() -> u64 {
    proc_status_kb("VmRSS:") * 1024
}

fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so each run's peak is its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn bench_dir() -> PathBuf {
    std::env::var_os("MEDGRPO_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("medgrpo-bench-shard"))
}

fn bench_n() -> usize {
    std::env::var("MEDGRPO_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

fn bench_config(dir: &Path, n: usize, out: &Path) -> Result<Config> {
    let paths = ensure_synthetic_pngs(&dir.join("png"), n)?;
    let mut obj = serde_json::Map::new();
    for (i, p) in paths.iter().enumerate() {
        obj.insert(
            format!("q{i}"),
            serde_json::json!({"question": "?", "options": ["A. a", "B. b"], "correct_answer": "A",
                "ImagePath": [p.file_name().unwrap().to_string_lossy()]}),
        );
    }
    let json = dir.join("bench.json");
    std::fs::write(&json, serde_json::Value::Object(obj).to_string())?;
    let yaml = format!(
        "model: {{path: 'builtin:tiny'}}\ndata: {{train: '{}', image_root: '{}'}}\nshards: {{dir: '{}', image_size: 896, records_per_shard: 8}}\n",
        json.display(),
        dir.join("png").display(),
        out.display()
    );
    Config::from_yaml_str(&yaml, &[])
}

/// `medgrpo bench shard`.
pub fn bench_shard() -> Result<()> {
    let dir = bench_dir();
    let n = bench_n();
    let out = dir.join("shards");
    println!(
        "generating/reusing {n} synthetic 16-bit {SYNTH_W}x{SYNTH_H} PNGs in {}",
        dir.display()
    );
    let config = bench_config(&dir, n, &out)?;
    let mb_in: f64 = (0..n)
        .filter_map(|i| std::fs::metadata(dir.join(format!("png/synth_{i:05}.png"))).ok())
        .map(|m| m.len() as f64)
        .sum::<f64>()
        / 1e6;
    println!("input: {n} files, {mb_in:.1} MB");
    let rounds = std::env::var("MEDGRPO_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize)
        .max(1);
    let python = std::env::var("MEDGRPO_PYTHON").unwrap_or_else(|_| "python3".into());
    // Rust and PIL alternate, round after round, so both see the same (shared, noisy)
    // machine; the ratio of each adjacent pair is the figure, best and median reported.
    for workers in [1usize, 2] {
        let (mut best_rust, mut best_pil, mut ratios) = (0f64, 0f64, Vec::new());
        for round in 0..rounds {
            let _ = std::fs::remove_dir_all(&out);
            reset_peak_rss();
            let t = Instant::now();
            let s = build(
                &config,
                &BuildOptions {
                    workers: Some(workers),
                    ..Default::default()
                },
            )?;
            let secs = t.elapsed().as_secs_f64();
            let ips = s.images_processed as f64 / secs;
            best_rust = best_rust.max(ips);
            print!(
                "round {round} workers={workers}: rust {ips:.2} images/s, {:.1} MB/s in, peak RSS {:.0} MB ({} ok, {} failed)",
                s.bytes_in as f64 / 1e6 / secs,
                peak_rss() as f64 / 1e6,
                s.ok,
                s.failed
            );
            match pil_baseline(&python, &dir.join("png"), workers, n) {
                Ok((pil, rss)) => {
                    best_pil = best_pil.max(pil);
                    ratios.push(ips / pil);
                    println!(
                        "; PIL {pil:.2} images/s, peak RSS {rss:.0} MB (largest process) -> {:.2}x",
                        ips / pil
                    );
                }
                Err(e) => println!("; PIL baseline not run: {e:#}"),
            }
        }
        ratios.sort_by(f64::total_cmp);
        if !ratios.is_empty() {
            println!(
                "workers={workers}: best rust {best_rust:.2} images/s, best PIL {best_pil:.2} images/s -> best/best {:.2}x, median paired ratio {:.2}x (of {})",
                best_rust / best_pil,
                ratios[ratios.len() / 2],
                ratios.len()
            );
        }
    }
    index_cost();
    Ok(())
}

/// Runs `scripts/pil_baseline.py` on the first `n` PNGs of `png_dir`; (images/s, peak RSS MB).
fn pil_baseline(python: &str, png_dir: &Path, workers: usize, n: usize) -> Result<(f64, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pil_baseline.py");
    let o = Command::new(python)
        .arg(&script)
        .arg(png_dir)
        .arg("--workers")
        .arg(workers.to_string())
        .arg("--limit")
        .arg(n.to_string())
        .output()
        .with_context(|| format!("cannot run {python} (set MEDGRPO_PYTHON)"))?;
    if !o.status.success() {
        bail!(
            "{}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        );
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim().lines().last().unwrap_or(""))
        .with_context(|| format!("baseline printed {text}"))?;
    Ok((
        v["images_per_s"].as_f64().unwrap_or(f64::NAN),
        v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
    ))
}

/// Memory of the sharder's image list and the loader's index per image, measured on 200k
/// ReXVQA-shaped keys, extrapolated to 600k.
fn index_cost() {
    let n = 200_000usize;
    let before = current_rss();
    let keys: Vec<String> = (0..n)
        .map(|i| {
            image_key(&format!(
                "../deid_png/p{}/p{:08}/s{:08}/{:08x}-{:08x}-{:08x}-{:08x}-{:08x}.png",
                i % 10 + 10,
                i,
                i * 7,
                i,
                i * 3,
                i * 5,
                i * 11,
                i * 13
            ))
        })
        .collect();
    let paths: Vec<PathBuf> = keys
        .iter()
        .map(|k| Path::new("/data/rexvqa").join(k))
        .collect();
    let mid = current_rss();
    let index: std::collections::HashMap<String, (u32, u32)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), (i as u32 / 1024, i as u32 % 1024)))
        .collect();
    let after = current_rss();
    let sharder = mid.saturating_sub(before) as f64 / n as f64;
    let loader = after.saturating_sub(mid) as f64 / n as f64;
    println!(
        "index: sharder image list {sharder:.0} bytes/image (key + resolved path), loader key->slot map {loader:.0} bytes/image -> {:.0} MB and {:.0} MB for 600k images",
        sharder * 600_000.0 / 1e6,
        loader * 600_000.0 / 1e6
    );
    drop((keys, paths, index));
}

/// `medgrpo bench loader`: random records from page cache, as zero-copy slices and as full
/// [-1, 1] RGB pixel inputs at 896.
pub fn bench_loader() -> Result<()> {
    let dir = bench_dir();
    let n = bench_n();
    let out = dir.join("shards");
    let config = bench_config(&dir, n, &out)?;
    if read_manifest(&out).is_err() {
        build(&config, &BuildOptions::default())?;
    }
    let m = read_manifest(&out)?;
    let store = ShardStore::open(&out, &m.settings())?;
    let keys: Vec<&str> = store.keys().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let iters = 20_000;
    let t = Instant::now();
    let mut sum = 0u64;
    for _ in 0..iters {
        let k = keys[rng.random_range(0..keys.len())];
        let r = store.record(k)?;
        sum += std::hint::black_box(r)
            .iter()
            .step_by(4096)
            .map(|&b| b as u64)
            .sum::<u64>();
    }
    let rec_s = iters as f64 / t.elapsed().as_secs_f64();
    let iters = 200;
    let t = Instant::now();
    for _ in 0..iters {
        let k = keys[rng.random_range(0..keys.len())];
        let p = to_pixels(store.record(k)?, m.image_size, m.channels, 896)?;
        let p = std::hint::black_box(p);
        sum += p
            .data
            .iter()
            .step_by(1021)
            .map(|x| x.to_bits() as u64 & 0xFF)
            .sum::<u64>();
    }
    let pix_s = iters as f64 / t.elapsed().as_secs_f64();
    println!(
        "loader (1 thread, {} records of {}x{}x{} in page cache): {rec_s:.0} random records/s as zero-copy slices (every page touched), {pix_s:.0} records/s as [3,896,896] f32 pixel inputs (checksum {sum})",
        keys.len(),
        m.image_size,
        m.image_size,
        m.channels
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_images_are_seeded_16_bit_and_smooth_plus_noise() {
        let a = synthetic_cxr(64, 80, 3);
        assert_eq!(a, synthetic_cxr(64, 80, 3));
        assert_ne!(a, synthetic_cxr(64, 80, 4));
        let (lo, hi) = (a.iter().min().unwrap(), a.iter().max().unwrap());
        assert!(hi - lo > 10_000, "wide 16-bit range: {lo}..{hi}");
        // Lung fields darker than the mediastinum on the same row.
        let row = 36 * 64;
        assert!(a[row + 20] < a[row + 32]);
    }
}

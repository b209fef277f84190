//! `medgrpo bench shard` / `medgrpo bench loader`: the sharder's throughput and memory on
//! synthetic 16-bit radiograph-sized PNGs, side by side with the Python PIL baseline
//! (`scripts/pil_baseline.py`, what the original did), and the loader's random access rate.
//!
//! Knobs (environment, since `bench` takes only a name): `MEDGRPO_BENCH_N` images (default
//! 24), `MEDGRPO_BENCH_DIR` where the synthetic PNGs are kept between runs (default
//! `$TMPDIR/medgrpo-bench-shard`), `MEDGRPO_PYTHON` the interpreter for the baseline
//! (default `python3`; skipped with a note if it cannot run), `MEDGRPO_BENCH_ROUNDS` rounds of
//! Rust-then-PIL per worker count (default 3; the machine is shared, so pairs are compared).
//! Each run reports wall-clock images/s and CPU milliseconds per image (user + system, all
//! threads and worker processes): on a loaded machine the CPU figure is the one that measures
//! the work, since the wall clock also counts the time other programs held the cores.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use burn::backend::Flex;

use super::synthetic::{PNG_DIR, SYNTH_H, SYNTH_W, ensure_synthetic_pngs, synthetic_name};
use super::{cpu_seconds, peak_rss, reset_peak_rss};
use crate::config::{Config, Conversion};
use crate::data::loader::{Loader, ShardStore, Source};
use crate::data::shard::format::read_manifest;
use crate::data::shard::plan::{ImageList, Plan, prepare_dir};
use crate::data::shard::writer::ShardWriter;
use crate::data::shard::{BuildOptions, ShardSettings, build};

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
    let paths = ensure_synthetic_pngs(&dir.join(PNG_DIR), n)?;
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
        dir.join(PNG_DIR).display(),
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
        .filter_map(|i| std::fs::metadata(dir.join(PNG_DIR).join(synthetic_name(i))).ok())
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
        let (mut best_rust, mut best_pil) = (0f64, 0f64);
        let (mut ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let _ = std::fs::remove_dir_all(&out);
            reset_peak_rss();
            let (t, cpu0) = (Instant::now(), cpu_seconds());
            let s = build(
                &config,
                &BuildOptions {
                    workers: Some(workers),
                    ..Default::default()
                },
            )?;
            let secs = t.elapsed().as_secs_f64();
            let cpu_per_image = (cpu_seconds() - cpu0) / s.images_processed as f64;
            let ips = s.images_processed as f64 / secs;
            best_rust = best_rust.max(ips);
            print!(
                "round {round} workers={workers}: rust {ips:.2} images/s ({:.1} ms CPU/image), {:.1} MB/s in, peak RSS {:.0} MB ({} ok, {} failed)",
                cpu_per_image * 1e3,
                s.bytes_in as f64 / 1e6 / secs,
                peak_rss() as f64 / 1e6,
                s.ok,
                s.failed
            );
            match pil_baseline(&python, &dir.join(PNG_DIR), workers, n) {
                Ok(pil) => {
                    best_pil = best_pil.max(pil.images_per_s);
                    ratios.push(ips / pil.images_per_s);
                    cpu_ratios.push(pil.cpu_per_image / cpu_per_image);
                    println!(
                        "; PIL {:.2} images/s ({:.1} ms CPU/image), peak RSS {:.0} MB (largest process) -> {:.2}x wall, {:.2}x CPU",
                        pil.images_per_s,
                        pil.cpu_per_image * 1e3,
                        pil.peak_rss_mb,
                        ips / pil.images_per_s,
                        pil.cpu_per_image / cpu_per_image
                    );
                }
                Err(e) => println!("; PIL baseline not run: {e:#}"),
            }
        }
        ratios.sort_by(f64::total_cmp);
        cpu_ratios.sort_by(f64::total_cmp);
        if !ratios.is_empty() {
            println!(
                "workers={workers}: best rust {best_rust:.2} images/s, best PIL {best_pil:.2} images/s -> best/best {:.2}x, median paired ratio {:.2}x wall, {:.2}x CPU time (of {})",
                best_rust / best_pil,
                ratios[ratios.len() / 2],
                cpu_ratios[cpu_ratios.len() / 2],
                ratios.len()
            );
        }
    }
    println!("index memory per image: see `medgrpo bench loader`");
    Ok(())
}

/// What one run of the PIL baseline measured.
struct PilRun {
    images_per_s: f64,
    cpu_per_image: f64,
    peak_rss_mb: f64,
}

/// Runs `scripts/pil_baseline.py` on the first `n` PNGs of `png_dir`.
fn pil_baseline(python: &str, png_dir: &Path, workers: usize, n: usize) -> Result<PilRun> {
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
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(PilRun {
        images_per_s: f("images_per_s"),
        cpu_per_image: f("cpu_seconds") / f("images"),
        peak_rss_mb: f("peak_rss_mb"),
    })
}

/// Environment variable that turns `medgrpo bench loader` into one phase of [`index_rss`]
/// (`build:N` or `open:N`), run in a child process so its peak RSS is its own.
const INDEX_CHILD_ENV: &str = "MEDGRPO_BENCH_INDEX_CHILD";

/// A ReXVQA-shaped image key (`deid_png/p1x/p…/s…/<uuid>.png`, the key of ReXVQA's
/// `../deid_png/…` paths under its default allowed root).
fn rexvqa_key(i: usize) -> String {
    format!(
        "deid_png/p{}/p{:08}/s{:08}/{:08x}-{:08x}-{:08x}-{:08x}-{:08x}.png",
        i % 10 + 10,
        i,
        i * 7,
        i,
        i * 3,
        i * 5,
        i * 11,
        i * 13
    )
}

/// Peak RSS against the number of images, for the sharder's side (image list + plan +
/// writer) and the loader's (`ShardStore::open`: the key → slot index, sidecars read, maps)
/// with N ReXVQA-shaped keys and tiny (4×4 grey) records, so only the per-image bookkeeping
/// grows with N. Each phase runs in a child process (`MEDGRPO_BENCH_INDEX_CHILD`); the
/// image counts come from `MEDGRPO_BENCH_INDEX_NS` (default `10000,100000,600000`).
fn index_rss() -> Result<()> {
    let ns: Vec<usize> = std::env::var("MEDGRPO_BENCH_INDEX_NS")
        .unwrap_or_else(|_| "10000,100000,600000".into())
        .split(',')
        .map(|v| v.trim().parse().context("MEDGRPO_BENCH_INDEX_NS"))
        .collect::<Result<_>>()?;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    println!(
        "index memory (VmHWM of a child process per phase and N; ReXVQA-shaped keys, 4x4 records):"
    );
    for n in ns {
        let mut row = Vec::new();
        for phase in ["build", "open"] {
            let o = Command::new(&exe)
                .args(["bench", "loader"])
                .env(INDEX_CHILD_ENV, format!("{phase}:{n}"))
                .output()
                .context("cannot start the index child")?;
            let text = String::from_utf8_lossy(&o.stdout);
            if !o.status.success() {
                bail!(
                    "index child {phase}:{n} failed: {}{}",
                    text,
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            let v: serde_json::Value =
                serde_json::from_str(text.trim().lines().last().unwrap_or(""))
                    .with_context(|| format!("index child printed {text}"))?;
            let (base, peak) = (
                v["base"].as_f64().unwrap_or(f64::NAN),
                v["peak"].as_f64().unwrap_or(f64::NAN),
            );
            row.push(format!(
                "{phase} peak {:.0} MB ({:.0} bytes/image over the {:.0} MB start)",
                peak / 1e6,
                (peak - base) / n as f64,
                base / 1e6
            ));
        }
        println!("  N={n:>7}: sharder {}; loader {}", row[0], row[1]);
    }
    Ok(())
}

/// One phase of [`index_rss`]: `build:N` writes shards for N keys through the sharder's own
/// plan and writer, `open:N` opens them with the loader's store and reads 100k random
/// records, then deletes them. Prints `{"base", "peak"}` (bytes) on its last line.
fn index_child(spec: &str) -> Result<()> {
    let (phase, n) = spec
        .split_once(':')
        .context("MEDGRPO_BENCH_INDEX_CHILD is PHASE:N")?;
    let n: usize = n.parse().context("MEDGRPO_BENCH_INDEX_CHILD count")?;
    let dir = bench_dir().join(format!("index-{n}"));
    let settings = ShardSettings {
        image_size: 4,
        channels: 1,
        conversion: Conversion::Minmax,
    };
    let base = peak_rss();
    match phase {
        "build" => {
            let _ = std::fs::remove_dir_all(&dir);
            let mut keys: Vec<String> = (0..n).map(rexvqa_key).collect();
            keys.sort();
            let paths = keys
                .iter()
                .map(|k| Path::new("/data/rexvqa").join(k))
                .collect();
            let images = ImageList {
                keys,
                paths,
                ..Default::default()
            };
            let plan = Plan::new(settings, 1024, images)?;
            let manifest = plan.manifest();
            prepare_dir(&dir, &manifest)?;
            let record = vec![7u8; settings.record_bytes()];
            for s in 0..plan.num_shards() {
                let r = plan.range(s);
                let mut w = ShardWriter::create(
                    &dir,
                    s,
                    plan.images.keys[r.clone()].to_vec(),
                    settings.record_bytes(),
                    &manifest.settings_hash,
                )?;
                for slot in 0..r.len() {
                    w.push_ok(slot, &record, false)?;
                }
                w.finish()?;
            }
        }
        "open" => {
            let store = ShardStore::open(&dir, &settings)?;
            if store.len() != n {
                bail!(
                    "{} holds {} images, expected {n}",
                    dir.display(),
                    store.len()
                );
            }
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let mut sum = 0u64;
            for _ in 0..100_000 {
                let k = rexvqa_key(rng.random_range(0..n));
                sum += store.record(&k)?[0] as u64;
            }
            std::hint::black_box(sum);
            let _ = std::fs::remove_dir_all(&dir);
        }
        other => bail!("unknown index phase {other}"),
    }
    println!(
        "{}",
        serde_json::json!({"n": n, "phase": phase, "base": base, "peak": peak_rss()})
    );
    Ok(())
}

/// `medgrpo bench loader`: random records from page cache through the loader, three ways:
/// the compact path (`Loader::pixels_u8`, every page of the record read: the figure the
/// ≥ 2,000 records/s/core target is about), the compact path turned into a CPU tensor both
/// ways (`to_tensor`, meant for GPUs, and `to_tensor_host`), and the f32 path
/// (`Loader::pixels`, [3, 896, 896] f32 on the CPU). Then the index memory per image
/// count (see [`index_rss`]).
pub fn bench_loader() -> Result<()> {
    if let Ok(n) = std::env::var(INDEX_CHILD_ENV) {
        return index_child(&n);
    }
    let dir = bench_dir();
    let n = bench_n();
    let out = dir.join("shards");
    let config = bench_config(&dir, n, &out)?;
    if read_manifest(&out).is_err() {
        build(&config, &BuildOptions::default())?;
    }
    let m = read_manifest(&out)?;
    let store = ShardStore::open(&out, &m.settings())?;
    let mut keys: Vec<String> = store.keys().map(str::to_string).collect();
    keys.sort();
    let loader = Loader::new(Source::Shards(store), 896);
    let nowhere = Path::new("");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut sum = 0u64;
    let mut rate = |iters: usize, f: &mut dyn FnMut(&str) -> Result<u64>| -> Result<f64> {
        let t = Instant::now();
        for _ in 0..iters {
            let k = &keys[rng.random_range(0..keys.len())];
            sum = sum.wrapping_add(f(k)?);
        }
        Ok(iters as f64 / t.elapsed().as_secs_f64())
    };
    let compact = rate(20_000, &mut |k| {
        let px = loader.pixels_u8(k, nowhere)?;
        Ok(std::hint::black_box(px.data())
            .iter()
            .step_by(4096)
            .map(|&b| b as u64)
            .sum())
    })?;
    let device = Default::default();
    let tensor = rate(50, &mut |k| {
        let t = loader.pixels_u8(k, nowhere)?.to_tensor::<Flex>(&device);
        Ok(std::hint::black_box(t).dims()[1] as u64)
    })?;
    let host = rate(200, &mut |k| {
        let t = loader
            .pixels_u8(k, nowhere)?
            .to_tensor_host::<Flex>(&device);
        Ok(std::hint::black_box(t).dims()[1] as u64)
    })?;
    let f32_path = rate(200, &mut |k| {
        let p = loader.pixels(k, nowhere)?;
        Ok(std::hint::black_box(p).data.iter().step_by(1021).count() as u64)
    })?;
    println!(
        "loader (1 thread, {} records of {}x{}x{} in page cache, random keys):\n  compact pixels_u8 (zero-copy, every page read): {compact:.0} records/s\n  pixels_u8 + to_tensor::<Flex> (u8 upload, tensor ops on the CPU): {tensor:.0} records/s\n  pixels_u8 + to_tensor_host::<Flex> (f32 built on the host): {host:.0} records/s\n  f32 pixels() ([3,896,896] Vec<f32>): {f32_path:.0} records/s  (checksum {sum})",
        keys.len(),
        m.image_size,
        m.image_size,
        m.channels
    );
    index_rss()
}

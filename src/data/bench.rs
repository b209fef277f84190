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

use super::loader::{Loader, ShardStore, Source};
use super::record::image_key;
use super::shard::format::read_manifest;
use super::shard::plan::{ImageList, Plan, prepare_dir};
use super::shard::writer::ShardWriter;
use super::shard::{BuildOptions, ShardSettings, build};
use crate::config::{Config, Conversion};

/// Width and height of the synthetic images (a typical CXR detector size).
pub const SYNTH_W: u32 = 2000;
/// Height, see [`SYNTH_W`].
pub const SYNTH_H: u32 = 2500;

/// Half-width of each of the two uniform noise terms of [`synthetic_cxr`] (grey levels).
const NOISE: f32 = 175.0;

/// A synthetic 16-bit chest-radiograph-like image: smooth anatomy-like blobs (two dark lung
/// fields, a bright mediastinum and diaphragm, a vertical gradient) plus per-pixel noise,
/// seeded so the same `seed` gives the same image. Smooth content + noise makes PNG
/// compression and min-max conversion behave like real 12–16-bit data: the noise is calibrated
/// on the real computed radiograph `cxr_cr_nema-wg04_RG1_UNCR.dcm` (../shared/data/real-cxr),
/// whose neighbouring pixels differ by 0.84% of its grey range (standard deviation), what
/// sets how well a PNG compresses and so how long inflating it takes. (Until 2026-11-25 the
/// noise was four times that, 3.4%: PNGs at 94% of their raw size, where real radiographs
/// compress to about 73%, and inflate four times slower than on real data.)
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
            // Noise: sum of two uniforms (triangular), sigma about 143 grey levels: neighbour
            // differences of about 0.84% of the ~24,000-level range, as on the real CR image.
            v += rng.random_range(-NOISE..NOISE) + rng.random_range(-NOISE..NOISE);
            out.push(v.clamp(0.0, 65535.0) as u16);
        }
    }
    out
}

/// Writes `n` synthetic PNGs into `dir` (kept if already there), returns their paths.
/// They are encoded as PIL (and libpng) write PNGs by default, zlib level 6 with adaptive
/// filtering, as the PNGs of a real dataset were written.
pub fn ensure_synthetic_pngs(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        let p = dir.join(synthetic_name(i));
        if !p.exists() {
            let px = synthetic_cxr(SYNTH_W, SYNTH_H, i as u64);
            let tmp = p.with_extension("png.tmp");
            write_png16(&tmp, SYNTH_W, SYNTH_H, &px)?;
            std::fs::rename(&tmp, &p)?;
        }
        paths.push(p);
    }
    Ok(paths)
}

/// File name of the `i`-th synthetic PNG.
fn synthetic_name(i: usize) -> String {
    format!("synth_{i:05}.png")
}

/// The folder of the synthetic PNGs under the bench dir, named after the generator's version
/// (v2: noise calibrated on a real radiograph, zlib-style deflate at level 6) so an older generator's cache is not
/// reused.
const PNG_DIR: &str = "png-v2";

/// Writes a 16-bit grey PNG with zlib level 6 and adaptive filtering (PIL's defaults), deflated
/// by zlib-rs (see Cargo.toml): zlib's streams, which inflate about twice as fast as the
/// miniz_oxide streams of the same level.
pub(crate) fn write_png16(path: &Path, width: u32, height: u32, px: &[u16]) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Sixteen);
    enc.set_deflate_compression(png::DeflateCompression::Level(6));
    enc.set_filter(png::Filter::Adaptive);
    let mut w = enc.write_header()?;
    let bytes: Vec<u8> = px.iter().flat_map(|v| v.to_be_bytes()).collect();
    w.write_image_data(&bytes)?;
    w.finish()?;
    Ok(())
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

/// User + system CPU seconds this process has used, all threads (`/proc/self/stat` fields 14
/// and 15, in the kernel's fixed 100 ticks per second): the work done, whatever else runs on a
/// shared machine.
pub fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // The command name (field 2) may hold spaces; the fields after its ')' are plain.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(f64::NAN)
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

/// A ReXVQA-shaped image key (`p1x/p…/s…/<uuid>.png` after the `../deid_png/` prefix).
fn rexvqa_key(i: usize) -> String {
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

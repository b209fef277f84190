//! Synthetic 16-bit chest-radiograph-like PNGs: the sharder benchmark's input, and test images
//! for the decoders (seeded, so the same seed always gives the same image).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
/// sets how well a PNG compresses and so how long inflating it takes (real radiographs compress
/// to about 73% of their raw size; see docs/benchmarks.md).
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
pub fn synthetic_name(i: usize) -> String {
    format!("synth_{i:05}.png")
}

/// The folder of the synthetic PNGs under the bench dir, named after the generator's version
/// (v2: noise calibrated on a real radiograph, zlib-style deflate at level 6) so an older generator's cache is not
/// reused.
pub const PNG_DIR: &str = "png-v2";

/// Writes a 16-bit grey PNG with zlib level 6 and adaptive filtering (PIL's defaults), deflated
/// by zlib-rs (see Cargo.toml): zlib's streams, which inflate about twice as fast as the
/// miniz_oxide streams of the same level.
pub fn write_png16(path: &Path, width: u32, height: u32, px: &[u16]) -> Result<()> {
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

#[cfg(test)]
mod tests;

//! Image decoding: PNG (8/16-bit, grey, grey+alpha, RGB, RGBA) and JPEG through the `image`
//! crate, DICOM through [`super::dicom`]; the format is chosen from the file's first bytes,
//! not its name. Every failure is an error naming the file and the reason, and decoder
//! panics are caught, so one bad file never stops a sharding run.

use std::io::{Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use fast_image_resize::Resizer;
use image::{DynamicImage, ImageFormat};

use super::convert::{Decoded, Image8, Samples, percentile_range, to_u8, u16_table_within};
use super::resize::resize_into;
use crate::config::Conversion;

/// File formats recognised by their signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PNG signature.
    Png,
    /// JPEG SOI marker.
    Jpeg,
    /// DICOM: `DICM` at offset 128, or a bare data set (no Part-10 header).
    Dicom,
}

/// Guesses the format from the first bytes; anything that is neither PNG nor JPEG is tried
/// as DICOM (files without the Part-10 preamble have no magic number at all).
pub fn sniff(bytes: &[u8]) -> Format {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Format::Png
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Format::Jpeg
    } else {
        Format::Dicom
    }
}

/// Runs a decoder, turning a panic inside a third-party crate into an error.
pub fn no_panic<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(anyhow!("the {what} decoder panicked: {msg}"))
        }
    }
}

/// Decodes an in-memory image file to samples (no 8-bit conversion yet).
pub fn decode_bytes(bytes: &[u8]) -> Result<Decoded> {
    match sniff(bytes) {
        Format::Png => no_panic("PNG", || raster(bytes, ImageFormat::Png)),
        Format::Jpeg => no_panic("JPEG", || raster(bytes, ImageFormat::Jpeg)),
        Format::Dicom => no_panic("DICOM", || super::dicom::decode(bytes)),
    }
}

fn raster(bytes: &[u8], format: ImageFormat) -> Result<Decoded> {
    let img = image::load_from_memory_with_format(bytes, format)
        .with_context(|| format!("not a decodable {format:?} image"))?;
    let (width, height) = (img.width(), img.height());
    let (channels, samples) = match img {
        DynamicImage::ImageLuma8(b) => (1, Samples::U8(b.into_raw())),
        DynamicImage::ImageLumaA8(_) => (1, Samples::U8(img.to_luma8().into_raw())),
        DynamicImage::ImageRgb8(b) => (3, Samples::U8(b.into_raw())),
        DynamicImage::ImageRgba8(_) => (3, Samples::U8(img.to_rgb8().into_raw())),
        DynamicImage::ImageLuma16(b) => (1, Samples::U16(b.into_raw())),
        DynamicImage::ImageLumaA16(_) => (1, Samples::U16(img.to_luma16().into_raw())),
        DynamicImage::ImageRgb16(b) => (3, Samples::U16(b.into_raw())),
        DynamicImage::ImageRgba16(_) => (3, Samples::U16(img.to_rgb16().into_raw())),
        other => bail!("unsupported pixel layout {:?}", other.color()),
    };
    Ok(Decoded {
        width,
        height,
        channels,
        samples,
        voi: None,
        monochrome1: false,
    })
}

/// Reads and decodes a file; errors name the file.
pub fn decode_file(path: &Path) -> Result<Decoded> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decode_bytes(&bytes).with_context(|| format!("cannot decode {}", path.display()))
}

/// The whole per-image work of the sharder: decode → modality/VOI/MONOCHROME1 → 8-bit →
/// resize to `size`×`size` (PIL-style bilinear). Errors name the file and the reason.
/// One-off callers use this; a worker that loads many images keeps a [`Scratch`] and calls
/// [`load_u8_with`].
pub fn load_u8(path: &Path, policy: Conversion, size: u32) -> Result<Image8> {
    load_u8_with(path, policy, size, &mut Scratch::default())
}

/// Buffers that one worker reuses from image to image: the file bytes, the PNG rows of the
/// grey fast path, the 8-bit image before resizing and the resizer's own buffers. A radiograph
/// needs about 25 MB of them; allocating (and page-faulting) them afresh for every image cost
/// about a third of the sharder's time.
pub struct Scratch {
    file: Vec<u8>,
    rows: Vec<u8>,
    grey: Vec<u8>,
    resizer: Resizer,
}

impl Default for Scratch {
    fn default() -> Self {
        Self {
            file: Vec::new(),
            rows: Vec::new(),
            grey: Vec::new(),
            resizer: Resizer::new(),
        }
    }
}

/// [`load_u8`] with reusable buffers. Grey PNGs (8 or 16 bits, the usual radiograph
/// formats) take a fast path: decoded straight into a reused buffer, the 16-bit range and
/// 8-bit table computed on the native samples and the result resized with a reused resizer;
/// it gives exactly what the general path gives (tested). Everything else (colour, alpha,
/// JPEG, DICOM) goes through [`decode_bytes`] and [`to_u8`].
pub fn load_u8_with(
    path: &Path,
    policy: Conversion,
    size: u32,
    scratch: &mut Scratch,
) -> Result<Image8> {
    let Scratch {
        file,
        rows,
        grey,
        resizer,
    } = scratch;
    file.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(file))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if sniff(file) == Format::Png {
        let fast = no_panic("PNG", || {
            grey_png(file, policy, size, rows, grey, resizer).context("not a decodable Png image")
        })
        .with_context(|| format!("cannot decode {}", path.display()))?;
        if let Some(img) = fast {
            return Ok(img);
        }
    }
    let dec = decode_bytes(file).with_context(|| format!("cannot decode {}", path.display()))?;
    if dec.width == 0 || dec.height == 0 {
        bail!("{}: image has no pixels", path.display());
    }
    let img = to_u8(dec, policy);
    resize_into(
        resizer,
        &img.data,
        img.width,
        img.height,
        img.channels,
        size,
        size,
    )
    .with_context(|| format!("cannot resize {}", path.display()))
}

/// The fast path of [`load_u8_with`] for grey 8/16-bit non-interlaced PNGs without a
/// transparent colour key (which the general path expands to grey+alpha): the header is read
/// by the `png` crate, the image data by [`grey_png::read_grey_rows`] into `rows` (filtered
/// stream layout, unfiltered in place, 16-bit min/max taken row by row), then mapped to 8 bits
/// through the table of [`u16_table_within`] straight from the big-endian samples (no
/// 16-bit image is materialised) and resized. Gives exactly what the general path gives
/// (tested). `Ok(None)`: not such a PNG, or one the own reader refuses (a damaged stream):
/// the general path then decodes it, or reports the `png` crate's own error.
fn grey_png(
    bytes: &[u8],
    policy: Conversion,
    size: u32,
    rows: &mut Vec<u8>,
    grey: &mut Vec<u8>,
    resizer: &mut Resizer,
) -> Result<Option<Image8>> {
    let dec = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: MAX_DECODED_BYTES,
        },
    );
    let reader = dec.read_info()?;
    let info = reader.info();
    let bpp = match info.bit_depth {
        png::BitDepth::Eight => 1,
        png::BitDepth::Sixteen => 2,
        _ => return Ok(None),
    };
    if info.color_type != png::ColorType::Grayscale || info.interlaced || info.trns.is_some() {
        return Ok(None);
    }
    let (width, height) = (info.width, info.height);
    let Ok(range) = grey_png::read_grey_rows(bytes, width, height, bpp, MAX_DECODED_BYTES, rows)
    else {
        return Ok(None);
    };
    let (w, pixels) = (width as usize, width as usize * height as usize);
    let stride = 1 + w * bpp;
    grey.resize(pixels, 0);
    let samples = rows.chunks_exact(stride).map(|r| &r[1..]);
    match range {
        None => {
            for (out, row) in grey.chunks_exact_mut(w).zip(samples) {
                out.copy_from_slice(row);
            }
        }
        Some((min, max)) => {
            let be = |c: &[u8]| u16::from_be_bytes([c[0], c[1]]) as usize;
            let (lo, hi) = match policy {
                Conversion::Percentile => {
                    let mut hist = vec![0u64; 65536];
                    for row in samples.clone() {
                        for c in row.chunks_exact(2) {
                            hist[be(c)] += 1;
                        }
                    }
                    percentile_range(&hist, pixels)
                }
                // Window without a VOI (a PNG has none) is min-max, as in `to_u8`.
                Conversion::Minmax | Conversion::Window => (min as f64, max as f64),
            };
            let lut = u16_table_within(lo, hi, min, max);
            for (out, row) in grey.chunks_exact_mut(w).zip(samples) {
                for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                    *o = lut[be(c)];
                }
            }
        }
    }
    resize_into(resizer, grey, width, height, 1, size, size).map(Some)
}

/// Largest decoded image the fast path accepts, as the `image` crate's default limit.
const MAX_DECODED_BYTES: usize = 512 * 1024 * 1024;

mod grey_png;

#[cfg(test)]
mod tests;

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

use super::convert::{Decoded, Image8, Samples, map_u16_into, to_u8};
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

/// Buffers that one worker reuses from image to image: the file bytes, the decoder's output,
/// the 8-bit image before resizing and the resizer's own buffers. A radiograph needs about
/// 25 MB of them; allocating (and page-faulting) them afresh for every image cost about a
/// third of the sharder's time.
pub struct Scratch {
    file: Vec<u8>,
    decoded: Vec<u16>,
    grey: Vec<u8>,
    resizer: Resizer,
}

impl Default for Scratch {
    fn default() -> Self {
        Self {
            file: Vec::new(),
            decoded: Vec::new(),
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
        decoded,
        grey,
        resizer,
    } = scratch;
    file.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(file))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if sniff(file) == Format::Png {
        let fast = no_panic("PNG", || {
            grey_png(file, policy, size, decoded, grey, resizer)
                .context("not a decodable Png image")
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
/// transparent colour key (which the general path expands to grey+alpha). Rows are read one
/// at a time from the `png` crate (the decoder `image` uses) and, for 16 bits, turned into
/// native samples while their min/max is taken, hot in cache. `Ok(None)`: not such a PNG.
fn grey_png(
    bytes: &[u8],
    policy: Conversion,
    size: u32,
    decoded: &mut Vec<u16>,
    grey: &mut Vec<u8>,
    resizer: &mut Resizer,
) -> Result<Option<Image8>> {
    let mut dec = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: MAX_DECODED_BYTES,
        },
    );
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info()?;
    let info = reader.info();
    let depth = info.bit_depth;
    if info.color_type != png::ColorType::Grayscale
        || info.interlaced
        || info.trns.is_some()
        || !matches!(depth, png::BitDepth::Eight | png::BitDepth::Sixteen)
    {
        return Ok(None);
    }
    let (width, height) = (info.width, info.height);
    let w = width as usize;
    let pixels = w * height as usize;
    if depth == png::BitDepth::Eight {
        grey.resize(pixels, 0);
        reader.next_frame(grey)?;
    } else {
        decoded.resize(pixels, 0);
        let (mut lo, mut hi) = (u16::MAX, 0u16);
        for out in decoded.chunks_exact_mut(w) {
            let row = reader.next_row()?.context("image data ends early")?;
            for (o, c) in out.iter_mut().zip(row.data().chunks_exact(2)) {
                *o = u16::from_be_bytes([c[0], c[1]]);
            }
            lo = out.iter().copied().fold(lo, u16::min);
            hi = out.iter().copied().fold(hi, u16::max);
        }
        // Past the last row: the end of the image data, with its checksum checked.
        if reader.next_row()?.is_some() {
            bail!("more image rows than the header says");
        }
        let range = match policy {
            Conversion::Percentile => None,
            // Window without a VOI (a PNG has none) is min-max, as in `to_u8`.
            Conversion::Minmax | Conversion::Window => Some((lo, hi)),
        };
        map_u16_into(decoded, policy, range, grey);
    }
    resize_into(resizer, grey, width, height, 1, size, size).map(Some)
}

/// Largest decoded image the fast path accepts, as the `image` crate's default limit.
const MAX_DECODED_BYTES: usize = 512 * 1024 * 1024;

#[cfg(test)]
mod tests;

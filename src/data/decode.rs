//! Image decoding: PNG (8/16-bit, grey, grey+alpha, RGB, RGBA) and JPEG through the `image`
//! crate, DICOM through [`super::dicom`]; the format is chosen from the file's first bytes,
//! not its name. Every failure is an error naming the file and the reason, and decoder
//! panics are caught, so one bad file never stops a sharding run.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use image::{DynamicImage, ImageFormat};

use super::convert::{Decoded, Image8, Samples, to_u8};
use super::resize::resize;
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
pub fn load_u8(path: &Path, policy: Conversion, size: u32) -> Result<Image8> {
    let dec = decode_file(path)?;
    if dec.width == 0 || dec.height == 0 {
        bail!("{}: image has no pixels", path.display());
    }
    let img = to_u8(dec, policy);
    resize(&img, size, size).with_context(|| format!("cannot resize {}", path.display()))
}

#[cfg(test)]
mod tests;

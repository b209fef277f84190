//! Resize with the bilinear convolution that PIL's `Image.resize(size, BILINEAR)` uses (and
//! therefore the Hugging Face image processor): a triangle filter whose support widens with
//! the scale when shrinking (antialiased). `fast_image_resize` implements PIL's algorithm,
//! including its fixed-point rounding for u8, which the reference fixtures check to ±1.

use anyhow::{Context, Result, bail};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::convert::Image8;

/// Resizes a grey or RGB 8-bit image to `width`×`height` (aspect ratio not kept, as the
/// Gemma 3 image processor does). Same size returns a copy.
pub fn resize(img: &Image8, width: u32, height: u32) -> Result<Image8> {
    if img.width == width && img.height == height {
        return Ok(img.clone());
    }
    let pixel_type = match img.channels {
        1 => PixelType::U8,
        3 => PixelType::U8x3,
        c => bail!("cannot resize an image with {c} channels"),
    };
    let src = ImageRef::new(img.width, img.height, &img.data, pixel_type)
        .context("image buffer does not match its size")?;
    let mut dst = Image::new(width, height, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .context("resize failed")?;
    Ok(Image8 {
        width,
        height,
        channels: img.channels,
        data: dst.into_vec(),
    })
}

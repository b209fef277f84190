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
    resize_into(
        &mut Resizer::new(),
        &img.data,
        img.width,
        img.height,
        img.channels,
        width,
        height,
    )
}

/// [`resize`] of a borrowed `src_width`×`src_height` buffer with a caller-kept [`Resizer`],
/// whose internal buffers are reused from call to call (a sharder worker keeps one).
pub fn resize_into(
    resizer: &mut Resizer,
    data: &[u8],
    src_width: u32,
    src_height: u32,
    channels: u8,
    width: u32,
    height: u32,
) -> Result<Image8> {
    let pixel_type = match channels {
        1 => PixelType::U8,
        3 => PixelType::U8x3,
        c => bail!("cannot resize an image with {c} channels"),
    };
    let expected = src_width as usize * src_height as usize * channels as usize;
    if data.len() != expected {
        bail!(
            "image buffer has {} bytes, expected {expected} for {src_width}x{src_height}x{channels}",
            data.len()
        );
    }
    if src_width == width && src_height == height {
        return Ok(Image8 {
            width,
            height,
            channels,
            data: data.to_vec(),
        });
    }
    let src = ImageRef::new(src_width, src_height, data, pixel_type)
        .context("image buffer does not match its size")?;
    let mut dst = Image::new(width, height, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    resizer
        .resize(&src, &mut dst, &options)
        .context("resize failed")?;
    Ok(Image8 {
        width,
        height,
        channels,
        data: dst.into_vec(),
    })
}

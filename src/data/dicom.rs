//! DICOM decoding with dicom-rs: dicom-object parses the file (Part-10 or a bare data set),
//! dicom-pixeldata decodes the pixel data (native, RLE, JPEG baseline/lossless, JPEG 2000 in
//! pure Rust) and applies the modality LUT (rescale slope/intercept). The VOI transform and
//! MONOCHROME1 inversion are carried to [`super::convert`], which applies them in the order
//! DESIGN.md fixes: modality LUT → VOI → 8-bit → MONOCHROME1 inversion → resize.
//!
//! dicom-pixeldata's own image conversion is not used for the 8-bit step: its default
//! normalisation and window outputs are scaled to the stored bit depth, while the policy here
//! must be the same `round((x - lo) / (hi - lo) * 255)` for every format.

use std::io::Cursor;

use anyhow::{Context, Result, anyhow, bail};
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, OpenFileOptions, file::ReadPreamble};
use dicom_pixeldata::{
    ConvertOptions, ModalityLutOption, PhotometricInterpretation, PixelDecoder, VoiLutOption,
};

use super::convert::{Decoded, Samples, Voi};

/// Parses a DICOM file from memory: with a Part-10 header (preamble optional), or as a bare
/// data set in implicit or explicit VR little endian (old modality exports).
pub fn parse(bytes: &[u8]) -> Result<DefaultDicomObject> {
    let part10 = OpenFileOptions::new()
        .read_preamble(if bytes.len() > 132 && &bytes[128..132] == b"DICM" {
            ReadPreamble::Always
        } else {
            ReadPreamble::Never
        })
        .from_reader(Cursor::new(bytes));
    let err = match part10 {
        Ok(obj) => return Ok(obj),
        Err(e) => e,
    };
    if bytes.starts_with(b"DICM") || bytes.get(128..132) == Some(b"DICM") {
        return Err(anyhow!(err).context("invalid DICOM Part-10 file"));
    }
    // No header: try the bare data set as implicit, then explicit VR little endian, behind
    // a synthesised Part-10 header (the decoders need a transfer syntax).
    for uid in ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"] {
        let Ok(meta) = FileMetaTableBuilder::new()
            .transfer_syntax(uid)
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
            .media_storage_sop_instance_uid("2.25.0")
            .build()
        else {
            continue;
        };
        let mut buf = b"DICM".to_vec();
        if meta.write(&mut buf).is_err() {
            continue;
        }
        buf.extend_from_slice(bytes);
        if let Ok(obj) = OpenFileOptions::new()
            .read_preamble(ReadPreamble::Never)
            .from_reader(Cursor::new(&buf[..]))
            && obj.get(dicom_dictionary_std::tags::PIXEL_DATA).is_some()
        {
            return Ok(obj);
        }
    }
    Err(anyhow!(err).context("not a PNG, JPEG or DICOM file"))
}

/// Decodes the first frame's pixels: grey images as modality values (f32) with their VOI
/// transform and MONOCHROME1 flag; colour images as 8-bit RGB.
pub fn decode(bytes: &[u8]) -> Result<Decoded> {
    let obj = parse(bytes)?;
    let pixels = obj
        .decode_pixel_data_frame(0)
        .map_err(anyhow::Error::new)
        .context("cannot decode the pixel data")?;
    let (width, height) = (pixels.columns(), pixels.rows());
    let spp = pixels.samples_per_pixel();
    let n = width as usize * height as usize;
    if spp == 3 {
        let opts = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
        let v: Vec<u8> = pixels
            .to_vec_frame_with_options(0, &opts)
            .map_err(anyhow::Error::new)
            .context("cannot read colour samples")?;
        if pixels.bits_allocated() != 8 || v.len() < n * 3 {
            bail!(
                "colour DICOM with {} bits allocated is not supported",
                pixels.bits_allocated()
            );
        }
        return Ok(Decoded {
            width,
            height,
            channels: 3,
            samples: Samples::U8(v[..n * 3].to_vec()),
            voi: None,
            monochrome1: false,
        });
    }
    if spp != 1 {
        bail!("{spp} samples per pixel is not supported");
    }
    let pi = pixels.photometric_interpretation().clone();
    let monochrome1 = match pi {
        PhotometricInterpretation::Monochrome1 => true,
        PhotometricInterpretation::Monochrome2 => false,
        other => bail!("photometric interpretation {other} is not supported for one sample"),
    };
    // Modality LUT only (VOI identity): values in the modality's units (e.g. HU, or stored
    // values when slope/intercept are 1/0).
    let opts = ConvertOptions::new()
        .with_modality_lut(ModalityLutOption::Default)
        .with_voi_lut(VoiLutOption::Identity);
    let v: Vec<f32> = pixels
        .to_vec_frame_with_options(0, &opts)
        .map_err(anyhow::Error::new)
        .context("cannot apply the modality LUT")?;
    if v.len() != n {
        bail!("pixel data holds {} samples, expected {n}", v.len());
    }
    let voi = first_voi(&pixels);
    Ok(Decoded {
        width,
        height,
        channels: 1,
        samples: Samples::F32(v),
        voi,
        monochrome1,
    })
}

/// The file's first VOI transform: a VOI LUT table wins over window values, as in PS3.3
/// C.11.2 and in dicom-pixeldata's default.
fn first_voi(p: &dicom_pixeldata::DecodedPixelData<'_>) -> Option<Voi> {
    if let Ok(Some(luts)) = p.voi_lut_sequence()
        && let Some(l) = luts.first()
        && !l.data.is_empty()
    {
        let declared = ((1u32 << l.bits_stored.min(16)) - 1) as f64;
        let max = l.data.iter().copied().max().unwrap_or(0) as f64;
        return Some(Voi::Lut {
            first_mapped: l.min_pixel_value,
            data: l.data.clone(),
            out_max: declared.max(max),
        });
    }
    let window = p.window().ok().flatten()?.first().copied()?;
    let function = p
        .voi_lut_function()
        .ok()
        .flatten()
        .and_then(|f| f.first().copied())
        .unwrap_or_default();
    Some(Voi::Window {
        center: window.center,
        width: window.width,
        function,
    })
}

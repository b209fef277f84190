//! DICOM decoding with dicom-rs: dicom-object parses the file (Part-10 or a bare data set),
//! dicom-pixeldata decodes the pixel data (native, RLE, JPEG baseline/lossless, JPEG 2000 in
//! pure Rust) and applies the modality LUT (rescale slope/intercept). The VOI transform and
//! MONOCHROME1 inversion are carried to [`super::convert`], which applies them in the order
//! DESIGN.md fixes: modality LUT → VOI → 8-bit → MONOCHROME1 inversion → resize.
//!
//! Two things dicom-pixeldata does not do are done here, both checked against pydicom on a
//! real radiograph (`scripts/dicom_made_fixtures.py`):
//! - **JPEG-LS** (transfer syntaxes 1.2.840.10008.1.2.4.80 lossless and .81 near-lossless):
//!   dicom-pixeldata decodes it only with its `charls` feature, which builds the CharLS C++
//!   library with CMake, a tool this project's machines do not have (a plain Rust toolchain
//!   is all a build needs). The first frame is decoded with `pure_jpegls` (pure Rust) and the
//!   data set continues as native pixel data, so everything after is the common path.
//! - a **Modality LUT Sequence** (0028,3000) instead of rescale slope/intercept: its table
//!   maps the stored values exactly as pydicom's `apply_modality_lut` does.
//!
//! dicom-pixeldata's own image conversion is not used for the 8-bit step: its default
//! normalisation and window outputs are scaled to the stored bit depth, while the policy here
//! must be the same `round((x - lo) / (hi - lo) * 255)` for every format.

use std::io::Cursor;

use anyhow::{Context, Result, anyhow, bail};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
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
    let mut obj = parse(bytes)?;
    if is_jpeg_ls(&obj) {
        jpeg_ls_to_native(&mut obj).context("cannot decode the JPEG-LS pixel data")?;
    }
    let lut = modality_lut(&obj)?;
    let pixels = obj
        .decode_pixel_data_frame(0)
        .map_err(anyhow::Error::new)
        .context("cannot decode the pixel data")?;
    match pixels.samples_per_pixel() {
        3 => colour(&pixels),
        1 => grey(&pixels, lut.as_ref()),
        spp => bail!("{spp} samples per pixel is not supported"),
    }
}

fn colour(pixels: &dicom_pixeldata::DecodedPixelData<'_>) -> Result<Decoded> {
    let (width, height) = (pixels.columns(), pixels.rows());
    let n = width as usize * height as usize;
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
    Ok(Decoded {
        width,
        height,
        channels: 3,
        samples: Samples::U8(v[..n * 3].to_vec()),
        voi: None,
        monochrome1: false,
    })
}

fn grey(
    pixels: &dicom_pixeldata::DecodedPixelData<'_>,
    lut: Option<&ModalityLut>,
) -> Result<Decoded> {
    let (width, height) = (pixels.columns(), pixels.rows());
    let n = width as usize * height as usize;
    let monochrome1 = match pixels.photometric_interpretation() {
        PhotometricInterpretation::Monochrome1 => true,
        PhotometricInterpretation::Monochrome2 => false,
        other => bail!("photometric interpretation {other} is not supported for one sample"),
    };
    // Modality LUT only (VOI identity): values in the modality's units (e.g. HU, or stored
    // values when slope/intercept are 1/0). A LUT sequence is applied here, on stored values.
    let modality = match lut {
        Some(_) => ModalityLutOption::None,
        None => ModalityLutOption::Default,
    };
    let opts = ConvertOptions::new()
        .with_modality_lut(modality)
        .with_voi_lut(VoiLutOption::Identity);
    let mut v: Vec<f32> = pixels
        .to_vec_frame_with_options(0, &opts)
        .map_err(anyhow::Error::new)
        .context("cannot apply the modality LUT")?;
    if v.len() != n {
        bail!("pixel data holds {} samples, expected {n}", v.len());
    }
    if let Some(lut) = lut {
        lut.apply(&mut v);
    }
    Ok(Decoded {
        width,
        height,
        channels: 1,
        samples: Samples::F32(v),
        voi: first_voi(pixels),
        monochrome1,
    })
}

/// The first table of a Modality LUT Sequence (PS3.3 C.11.1).
#[derive(Debug, Clone, PartialEq)]
struct ModalityLut {
    /// First stored value mapped (LUT Descriptor, second value).
    first: i64,
    /// The table (LUT Data), as many entries as the descriptor declares.
    data: Vec<u16>,
}

impl ModalityLut {
    /// pydicom's `apply_modality_lut`: values below the first mapped one take entry 0,
    /// values past the table its last entry.
    fn apply(&self, v: &mut [f32]) {
        let last = self.data.len() as i64 - 1;
        for x in v {
            let i = (*x as i64 - self.first).clamp(0, last);
            *x = self.data[i as usize] as f32;
        }
    }
}

/// The file's Modality LUT Sequence, if it has one with an item. Errors name the field.
fn modality_lut(obj: &DefaultDicomObject) -> Result<Option<ModalityLut>> {
    let Some(seq) = obj.element_opt(tags::MODALITY_LUT_SEQUENCE)? else {
        return Ok(None);
    };
    let Some(item) = seq.items().and_then(|i| i.first()) else {
        return Ok(None);
    };
    let desc: Vec<i64> = item
        .element(tags::LUT_DESCRIPTOR)
        .context("Modality LUT Sequence item has no LUT Descriptor (0028,3002)")?
        .to_multi_int()
        .context("Modality LUT Descriptor (0028,3002) is not three integers")?;
    let [entries, first, _bits] = desc[..] else {
        bail!(
            "Modality LUT Descriptor (0028,3002) has {} values, not 3",
            desc.len()
        );
    };
    let signed = obj
        .element_opt(tags::PIXEL_REPRESENTATION)?
        .map(|e| e.to_int::<u16>())
        .transpose()?
        == Some(1);
    // The descriptor is US or SS: for signed pixels a first value read as US above 32767
    // is a negative SS (what pydicom decides for the ambiguous VR too).
    let first = if signed && first > i16::MAX as i64 {
        first - 65536
    } else {
        first
    };
    let entries = if entries == 0 {
        65536
    } else {
        entries as usize
    };
    let lut_data = item
        .element(tags::LUT_DATA)
        .context("Modality LUT Sequence item has no LUT Data (0028,3006)")?;
    let data: Vec<u16> = match lut_data.value().primitive() {
        // OW read as bytes: little-endian words (big endian is retired and refused earlier).
        Some(PrimitiveValue::U8(b)) => b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
        _ => lut_data
            .to_multi_int()
            .context("Modality LUT Data (0028,3006) is not a list of integers")?,
    };
    if data.len() < entries {
        bail!(
            "Modality LUT Descriptor (0028,3002) declares {entries} entries but LUT Data (0028,3006) holds {}",
            data.len()
        );
    }
    Ok(Some(ModalityLut {
        first,
        data: data[..entries].to_vec(),
    }))
}

const JPEG_LS: [&str; 2] = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];

fn is_jpeg_ls(obj: &DefaultDicomObject) -> bool {
    let ts = obj.meta().transfer_syntax.trim_end_matches(['\0', ' ']);
    JPEG_LS.contains(&ts)
}

/// Decodes the first frame of JPEG-LS pixel data and puts it back as native (explicit VR
/// little endian) pixel data, so dicom-pixeldata reads it like any uncompressed file.
fn jpeg_ls_to_native(obj: &mut DefaultDicomObject) -> Result<()> {
    let int = |tag, name: &str| -> Result<u32> {
        obj.element(tag)
            .with_context(|| format!("no {name}"))?
            .to_int::<u32>()
            .with_context(|| format!("{name} is not an integer"))
    };
    let (rows, columns) = (int(tags::ROWS, "Rows")?, int(tags::COLUMNS, "Columns")?);
    let spp = int(tags::SAMPLES_PER_PIXEL, "Samples per Pixel")?;
    let bits = int(tags::BITS_ALLOCATED, "Bits Allocated")?;
    if spp != 1 || !(bits == 8 || bits == 16) {
        bail!("JPEG-LS with {spp} samples of {bits} bits is not supported (grey, 8 or 16 bits)");
    }
    let frames = match obj.element_opt(tags::NUMBER_OF_FRAMES)? {
        Some(e) => e.to_int::<u32>().unwrap_or(1).max(1),
        None => 1,
    };
    let fragments = obj
        .element(tags::PIXEL_DATA)?
        .value()
        .fragments()
        .context("the pixel data is not encapsulated")?;
    let stream: Vec<u8> = if frames == 1 {
        fragments.concat()
    } else if fragments.len() == frames as usize {
        fragments[0].clone()
    } else {
        bail!(
            "{frames} frames in {} fragments: a frame split over fragments is not supported",
            fragments.len()
        );
    };
    let (samples, _, _) = jpegls::decode(&stream, columns, rows).map_err(|e| anyhow!("{e}"))?;
    let native: Vec<u8> = if bits == 8 {
        samples.iter().map(|&x| x as u8).collect()
    } else {
        samples.iter().flat_map(|x| x.to_le_bytes()).collect()
    };
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        if bits == 8 { VR::OB } else { VR::OW },
        PrimitiveValue::from(native),
    ));
    obj.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from("1"),
    ));
    let meta = obj.meta_mut();
    meta.transfer_syntax = dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN.to_string();
    meta.update_information_group_length();
    Ok(())
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

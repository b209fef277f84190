//! The safetensors header, read and checked here rather than by the safetensors crate: its
//! offset check walks the tensors sorted by offset and names the one after a bad one (a
//! tensor moved past the end makes its neighbour "invalid"), and its size check names none.
//! Here each tensor is first checked on its own (dtype, shape, its offsets against its size
//! and the data length), then their layout (no gap, no overlap, nothing after the last), and
//! every error names the file and the tensor at fault.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use safetensors::Dtype;
use serde_json::{Map, Value};

use crate::clip::{clip, clip_message};

/// Largest header the safetensors format allows (its crate refuses more, too).
const MAX_HEADER: u64 = 100_000_000;

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// Name as stored.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// First byte in the file (header included).
    pub start: usize,
    /// One past the last byte in the file.
    pub end: usize,
}

/// Reads and checks the header of the safetensors file `bytes` (read from `path`, which the
/// errors name): the tensors in header order, with file offsets.
pub fn read_header(bytes: &[u8], path: &Path) -> Result<Vec<TensorEntry>> {
    let file = path.display();
    let Some(len_bytes) = bytes.get(..8) else {
        bail!(
            "{file}: {} bytes, too short for a safetensors header length",
            bytes.len()
        );
    };
    let n = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    if n > MAX_HEADER || n > (bytes.len() - 8) as u64 {
        bail!(
            "{file}: header length {n} runs past the end of the file ({} bytes) or over the format's {MAX_HEADER}",
            bytes.len()
        );
    }
    let data_start = 8 + n as usize;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes[8..data_start]).map_err(|e| {
            anyhow!(
                "{file}: header is not a JSON object: {}",
                clip_message(&e.to_string())
            )
        })?;
    let data_len = bytes.len() - data_start;
    let mut tensors = Vec::with_capacity(header.len());
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let (dtype, shape, (a, b)) = tensor_info(info, data_len)
            .map_err(|why| anyhow!("{file}: tensor `{}`: {why}", clip(name)))?;
        tensors.push(TensorEntry {
            name: name.clone(),
            dtype,
            shape,
            start: data_start + a,
            end: data_start + b,
        });
    }
    check_layout(&tensors, data_start, data_len).map_err(|why| anyhow!("{file}: {why}"))?;
    Ok(tensors)
}

/// Checks a safetensors file's header (see [`read_header`]).
pub fn check_header(bytes: &[u8], path: &Path) -> Result<()> {
    read_header(bytes, path).map(|_| ())
}

/// A tensor's dtype, shape and data offsets (relative to the data) as the header gives them.
type Info = (Dtype, Vec<usize>, (usize, usize));

/// A tensor's dtype, shape and data offsets, each checked on its own: the offsets must hold
/// exactly the bytes the shape needs and lie inside the data.
fn tensor_info(info: &Value, data_len: usize) -> Result<Info, String> {
    let obj = info.as_object().ok_or("is not an object")?;
    let dtype_name = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("has no `dtype` string")?;
    let dtype: Dtype = serde_json::from_value(Value::String(dtype_name.to_string()))
        .map_err(|_| format!("dtype {} is not a safetensors dtype", clip(dtype_name)))?;
    let shape = usizes(obj.get("shape"), "shape")?;
    let offsets = usizes(obj.get("data_offsets"), "data_offsets")?;
    let [a, b] = offsets[..] else {
        return Err(format!("data_offsets has {} values, not 2", offsets.len()));
    };
    let bits = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.bitsize()))
        .ok_or_else(|| format!("shape {shape:?} of {dtype:?} overflows"))?;
    if bits % 8 != 0 {
        return Err(format!(
            "shape {shape:?} of {dtype:?} is not a whole number of bytes"
        ));
    }
    let size = bits / 8;
    if b < a {
        return Err(format!("data offsets {a}..{b} run backwards"));
    }
    if b > data_len {
        return Err(format!(
            "data offsets {a}..{b} go past the end of the data ({data_len} bytes)"
        ));
    }
    if b - a != size {
        return Err(format!(
            "data offsets {a}..{b} hold {} bytes, but shape {shape:?} of {dtype:?} needs {size}",
            b - a
        ));
    }
    Ok((dtype, shape, (a, b)))
}

fn usizes(v: Option<&Value>, field: &str) -> Result<Vec<usize>, String> {
    let items = v
        .and_then(Value::as_array)
        .ok_or_else(|| format!("has no `{field}` list"))?;
    items
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|u| usize::try_from(u).ok())
                .ok_or_else(|| format!("`{field}` holds {}, not a size", clip(&x.to_string())))
        })
        .collect()
}

/// The tensors, sorted by offset, must tile the data exactly: the first at 0, each starting
/// where the one before ends, the last ending with the file.
fn check_layout(tensors: &[TensorEntry], data_start: usize, data_len: usize) -> Result<(), String> {
    let mut order: Vec<&TensorEntry> = tensors.iter().collect();
    order.sort_by_key(|t| (t.start, t.end));
    let mut at = data_start;
    let mut prev: Option<&TensorEntry> = None;
    for t in order {
        let rel = |x: usize| x - data_start;
        let after = match prev {
            Some(p) => format!("where `{}` ends", clip(&p.name)),
            None => "the start of the data".into(),
        };
        if t.start > at {
            return Err(format!(
                "tensor `{}` starts at byte {} of the data, but {after} is byte {}: {} bytes belong to no tensor",
                clip(&t.name),
                rel(t.start),
                rel(at),
                t.start - at
            ));
        }
        if t.start < at {
            return Err(format!(
                "tensor `{}` (data bytes {}..{}) overlaps the tensor before it ({after}, byte {})",
                clip(&t.name),
                rel(t.start),
                rel(t.end),
                rel(at)
            ));
        }
        at = t.end;
        prev = Some(t);
    }
    if at != data_start + data_len {
        return Err(format!(
            "the tensors end at data byte {}, but the data holds {data_len} bytes",
            at - data_start
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

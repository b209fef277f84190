//! Dataset records, medical image decoding, 8-bit conversion, shards and the loader.
//!
//! The data path turns a ReXVQA-style JSON split into [`record::Record`]s, decodes the images
//! they name (PNG, JPEG, DICOM), converts them to 8 bits with a configurable policy, resizes
//! them like PIL and stores them once in memory-mappable shards that the loader reads without
//! copying. See DESIGN.md section 3.

pub mod convert;
pub mod decode;
pub mod dicom;
pub mod inspect;
pub mod loader;
pub mod paths;
pub mod pylist;
pub mod record;
pub mod resize;
pub mod shard;

#[cfg(test)]
pub(crate) mod testutil;

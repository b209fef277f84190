//! Dataset records, medical image decoding, 8-bit conversion, shards and the loader.

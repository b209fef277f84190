//! The streaming-stages runtime (being written).

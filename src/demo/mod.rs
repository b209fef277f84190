//! The built-in demo: a synthetic chest-X-ray-like dataset whose answers can only be read
//! from the image, so a run that learns shows it on CPU in minutes with no download.

pub mod synth;
pub mod warm_start;

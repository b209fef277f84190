//! The one place where a user's device choice (`model.device` in the YAML, `--device` on the
//! model commands) becomes a burn backend, so every command runs on CUDA the same way and a
//! binary built without CUDA says how to get it instead of failing obscurely.

use anyhow::Result;
use burn::prelude::Backend;

use crate::config::Device;

/// A command body written once, generic over the backend, and run on the backend the user
/// picked by [`run_on`].
pub trait OnBackend {
    /// What the body returns.
    type Output;
    /// Runs the body on backend `B` (its default device: CPU, or CUDA device 0).
    fn run<B: Backend>(self) -> Result<Self::Output>;
}

/// Runs `job` on the CPU (`flex`) or on CUDA.
pub fn run_on<J: OnBackend>(device: Device, job: J) -> Result<J::Output> {
    match device {
        Device::Cpu => job.run::<burn::backend::Flex>(),
        Device::Cuda => run_cuda(job),
    }
}

#[cfg(feature = "cuda")]
fn run_cuda<J: OnBackend>(job: J) -> Result<J::Output> {
    job.run::<burn::backend::Cuda>()
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<J: OnBackend>(_: J) -> Result<J::Output> {
    anyhow::bail!(
        "the device is cuda but this binary was built without CUDA: rebuild with `cargo build --release --features cuda`, or use the cpu device"
    )
}

#[cfg(test)]
mod tests;

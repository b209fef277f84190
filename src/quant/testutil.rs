//! Test helpers: reading reference tensors from the committed safetensors fixtures.

use half::bf16;
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;

/// Absolute path of a file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A safetensors fixture loaded in memory.
pub struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    /// Reads `tests/fixtures/<rel>`.
    pub fn open(rel: &str) -> Self {
        let path = fixture(rel);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self { bytes }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    /// Names of all tensors.
    pub fn names(&self) -> Vec<String> {
        self.st()
            .names()
            .into_iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Shape of a tensor.
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.st().tensor(name).unwrap().shape().to_vec()
    }

    /// A tensor as f32 (f32 or bf16 on disk).
    pub fn f32(&self, name: &str) -> Vec<f32> {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        match t.dtype() {
            Dtype::F32 => t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::BF16 => self.bf16(name).into_iter().map(f32::from).collect(),
            d => panic!("{name}: dtype {d:?}"),
        }
    }

    /// A bf16 tensor.
    pub fn bf16(&self, name: &str) -> Vec<bf16> {
        let st = self.st();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::BF16, "{name}");
        t.data()
            .chunks_exact(2)
            .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
            .collect()
    }

    /// A u8 tensor.
    pub fn u8(&self, name: &str) -> Vec<u8> {
        let st = self.st();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::U8, "{name}");
        t.data().to_vec()
    }
}

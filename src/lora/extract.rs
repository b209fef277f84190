//! Reading the adapters back out of a model: every `lora` sub-module found while walking the
//! model, named by its PEFT path — their weights as a PEFT [`Adapter`] to save in a checkpoint,
//! or their gradients under PEFT's key names (`medgrpo loss --grads`, checked against TRL).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::adapter::{Adapter, AdapterConfig, HostMatrix, LoraPair, peft_key};
use super::attach::peft_module_path;

/// One LoRA matrix of a model.
pub struct LoraMatrix<B: Backend> {
    /// PEFT module path of the adapted projection.
    pub module: String,
    /// `"A"` (`[r, in]`) or `"B"` (`[out, r]`).
    pub which: &'static str,
    /// The parameter's id (its gradient's key).
    pub id: ParamId,
    /// Its value.
    pub value: Tensor<B, 2>,
}

/// Collects the 2-D parameters under `lora` sub-modules, lora_A before lora_B (field order).
struct Walk<B: Backend> {
    path: Vec<String>,
    next_is_b: bool,
    found: Vec<LoraMatrix<B>>,
}

impl<B: Backend> ModuleVisitor<B> for Walk<B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(at) = self.path.iter().rposition(|p| p == "lora") else {
            return;
        };
        if D != 2 {
            return;
        }
        let value = param.val();
        let dims = value.dims();
        self.found.push(LoraMatrix {
            module: peft_module_path(&self.path[..at].join(".")),
            which: if self.next_is_b { "B" } else { "A" },
            id: param.id,
            value: value.reshape([dims[0], dims[1]]),
        });
        self.next_is_b = !self.next_is_b;
    }
}

/// Every LoRA matrix of `model`, in module order (lora_A then lora_B of each adapted Linear).
pub fn lora_matrices<B: Backend, M: Module<B>>(model: &M) -> Vec<LoraMatrix<B>> {
    let mut walk = Walk {
        path: Vec::new(),
        next_is_b: false,
        found: Vec::new(),
    };
    model.visit(&mut walk);
    walk.found
}

fn host<B: Backend>(t: Tensor<B, 2>) -> HostMatrix {
    let [r, c] = t.dims();
    HostMatrix {
        shape: [r, c],
        data: t
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 adapter weights"),
    }
}

/// The model's adapters with `config`, ready for [`Adapter::save`].
pub fn adapter_of<B: Backend, M: Module<B>>(model: &M, config: AdapterConfig) -> Adapter {
    let mut layers = BTreeMap::new();
    let mut pending_a = None;
    for m in lora_matrices(model) {
        match pending_a.take() {
            None => pending_a = Some(host(m.value)),
            Some(a) => {
                layers.insert(
                    m.module,
                    LoraPair {
                        a,
                        b: host(m.value),
                    },
                );
            }
        }
    }
    Adapter { config, layers }
}

/// A named f32 matrix: shape and values.
pub type NamedMatrix = ([usize; 2], Vec<f32>);

/// The gradients of every LoRA matrix of `model` in `grads`, by PEFT key name
/// (`base_model.model.<module>.lora_A.weight`); zeros where a matrix got no gradient.
pub fn lora_grads<B: AutodiffBackend, M: Module<B>>(
    model: &M,
    grads: &GradientsParams,
) -> BTreeMap<String, NamedMatrix> {
    lora_matrices(model)
        .into_iter()
        .map(|m| {
            let [r, c] = m.value.dims();
            let values = match grads.get::<B::InnerBackend, 2>(m.id) {
                Some(g) => g
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .expect("f32 gradient"),
                None => vec![0.0; r * c],
            };
            (peft_key(&m.module, m.which), ([r, c], values))
        })
        .collect()
}

/// Writes named f32 matrices as safetensors (metadata `format = pt`, like PEFT's files).
pub fn write_matrices(path: &Path, matrices: &BTreeMap<String, NamedMatrix>) -> Result<()> {
    use safetensors::{Dtype, tensor::TensorView};
    let bytes: Vec<(&String, &[usize; 2], Vec<u8>)> = matrices
        .iter()
        .map(|(k, (s, v))| (k, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(k, s, b)| Ok(((*k).clone(), TensorView::new(Dtype::F32, s.to_vec(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), path)
        .with_context(|| format!("writing {}", path.display()))
}

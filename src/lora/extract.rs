//! Reading the trained adapters back out of a model, as a PEFT [`Adapter`] to save in a
//! checkpoint: every `lora` sub-module found while walking the model, named by its PEFT path.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

use super::adapter::{Adapter, AdapterConfig, HostMatrix, LoraPair};
use super::attach::peft_module_path;

struct Collect {
    path: Vec<String>,
    pending_a: Option<HostMatrix>,
    layers: BTreeMap<String, LoraPair>,
}

fn host<B: Backend>(t: &Tensor<B, 2>) -> HostMatrix {
    let [r, c] = t.dims();
    HostMatrix {
        shape: [r, c],
        data: t
            .clone()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 adapter weights"),
    }
}

impl<B: Backend> ModuleVisitor<B> for Collect {
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
        let t: Tensor<B, 2> = Tensor::from_data(param.val().into_data(), &param.val().device());
        let module = peft_module_path(&self.path[..at].join("."));
        match self.pending_a.take() {
            None => self.pending_a = Some(host(&t)),
            Some(a) => {
                self.layers.insert(module, LoraPair { a, b: host(&t) });
            }
        }
    }
}

/// The model's adapters (lora_A then lora_B of each adapted Linear, in module order) with
/// `config`, ready for [`Adapter::save`].
pub fn adapter_of<B: Backend, M: Module<B>>(model: &M, config: AdapterConfig) -> Adapter {
    let mut c = Collect {
        path: Vec::new(),
        pending_a: None,
        layers: BTreeMap::new(),
    };
    model.visit(&mut c);
    Adapter {
        config,
        layers: c.layers,
    }
}

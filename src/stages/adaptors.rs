//! Generic adaptors between stages that pass lists and stages that take single items.

use anyhow::{Result, bail};

use super::Stage;

/// Runs a per-item stage over lists of items (in training: the reward scorer over a step's
/// groups, after the step-wise sampler): every item through the inner stage, the outputs it
/// keeps in order.
pub struct EachOf<S>(pub S);

impl<S: Stage> Stage for EachOf<S> {
    type In = Vec<S::In>;
    type Out = Vec<S::Out>;

    fn process(&mut self, seq: u64, items: Vec<S::In>) -> Result<Option<Vec<S::Out>>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(o) = self.0.process(seq, item)? {
                out.push(o);
            }
        }
        Ok(Some(out))
    }

    fn finish(&mut self) -> Result<()> {
        self.0.finish()
    }
}

/// Feeds lists of items to a stage that collects items into larger units (in training: the
/// advantage stage, collecting groups into steps) and passes on what it completes: at most one
/// unit per list, or nothing for a partial one.
pub struct LastOf<S>(pub S);

impl<S: Stage> Stage for LastOf<S> {
    type In = Vec<S::In>;
    type Out = S::Out;

    fn process(&mut self, seq: u64, items: Vec<S::In>) -> Result<Option<S::Out>> {
        let mut last = None;
        for item in items {
            if let Some(o) = self.0.process(seq, item)? {
                if last.is_some() {
                    bail!("a list of items completed more than one unit");
                }
                last = Some(o);
            }
        }
        Ok(last)
    }

    fn finish(&mut self) -> Result<()> {
        self.0.finish()
    }
}

//! What could not be learned, per call, and which launches each gap touches.

use crate::core::arn::KeyArn;
use crate::core::facts::{Instance, Missing, Volume};
use std::collections::BTreeMap;

/// Missing evidence that applies to every instance touching `target` (a key, a volume).
#[derive(Default)]
pub(super) struct Gaps {
    pub(super) by_target: BTreeMap<String, Vec<Missing>>,
    pub(super) everyone: Vec<Missing>,
}

impl Gaps {
    pub(super) fn note(&mut self, target: &str, m: Missing) {
        self.by_target.entry(target.to_owned()).or_default().push(m);
    }
    /// What is missing for one launch: of the instance, its volumes and its keys.
    pub(super) fn for_launch(&self, instance: &Instance, volumes: &[Volume], keys: &[KeyArn]) -> Vec<Missing> {
        let mut missing = self.for_targets(
            std::iter::once(instance.id.as_str())
                .chain(volumes.iter().map(|v| v.volume_id.as_str()))
                .chain(keys.iter().map(|k| k.arn().resource()))
                .collect::<Vec<_>>()
                .into_iter(),
        );
        for k in keys {
            for m in self.by_target.get(&k.to_string()).into_iter().flatten() {
                if !missing.contains(m) {
                    missing.push(m.clone());
                }
            }
        }
        missing
    }

    pub(super) fn for_targets<'a>(&self, targets: impl Iterator<Item = &'a str>) -> Vec<Missing> {
        let mut out = self.everyone.clone();
        for t in targets {
            if let Some(ms) = self.by_target.get(t) {
                for m in ms {
                    if !out.contains(m) {
                        out.push(m.clone());
                    }
                }
            }
        }
        out
    }
}

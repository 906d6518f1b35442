//! What a plugin tells the host about itself at `init`.

use serde::{Deserialize, Serialize};

use crate::EventKind;
use crate::finding::RuleSpec;
use crate::prefilter::Condition;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// The event kinds the plugin wants. The host sends it nothing else and
    /// tells the kernel sensor which kinds to capture at all.
    pub kinds: Vec<EventKind>,
    #[serde(default)]
    pub description: String,
    /// The ABI the plugin was built for; see [`crate::ABI_VERSION`].
    #[serde(default = "default_abi")]
    pub abi_version: u32,
    /// The event schema the plugin was built for.
    #[serde(default = "default_schema")]
    pub schema_version: u32,
    /// Conditions (all must hold) that every event the plugin could act on
    /// satisfies; the host sends it nothing else. See [`crate::prefilter`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefilter: Vec<Condition>,
    /// The rules the plugin's [`crate::Fired`] verdicts refer to, by index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
}

fn default_abi() -> u32 {
    crate::ABI_VERSION
}

fn default_schema() -> u32 {
    crate::SCHEMA_VERSION
}

impl Manifest {
    pub fn new(name: &str, version: &str, kinds: &[EventKind]) -> Manifest {
        Manifest {
            name: name.to_string(),
            version: version.to_string(),
            kinds: kinds.to_vec(),
            description: String::new(),
            abi_version: crate::ABI_VERSION,
            schema_version: crate::SCHEMA_VERSION,
            prefilter: Vec::new(),
            rules: Vec::new(),
        }
    }

    pub fn with_description(mut self, d: &str) -> Manifest {
        self.description = d.to_string();
        self
    }

    /// Adds prefilter conditions (see [`crate::prefilter`]).
    pub fn with_prefilter(mut self, conditions: impl IntoIterator<Item = Condition>) -> Manifest {
        self.prefilter.extend(conditions);
        self
    }

    /// Declares a rule; its index is the number of rules declared before
    /// it, and is what [`crate::Verdict::fire`] names.
    pub fn with_rule(mut self, rule: RuleSpec) -> Manifest {
        self.rules.push(rule);
        self
    }

    /// Declares several rules, indexed in order after those already
    /// declared.
    pub fn with_rules(mut self, rules: impl IntoIterator<Item = RuleSpec>) -> Manifest {
        self.rules.extend(rules);
        self
    }
}

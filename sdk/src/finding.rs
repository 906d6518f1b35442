//! What a plugin says about an event: a verdict, possibly with findings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Falco's priority scale, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Emergency,
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    #[serde(alias = "info")]
    Informational,
    Debug,
}

impl Priority {
    /// The spelling Falco uses in its JSON output (`"Warning"`).
    pub fn falco_name(self) -> &'static str {
        match self {
            Priority::Emergency => "Emergency",
            Priority::Alert => "Alert",
            Priority::Critical => "Critical",
            Priority::Error => "Error",
            Priority::Warning => "Warning",
            Priority::Notice => "Notice",
            Priority::Informational => "Informational",
            Priority::Debug => "Debug",
        }
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.falco_name())
    }
}

/// A detection: one rule matched one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Rule name, e.g. "Container Shell Spawned".
    pub rule: String,
    pub priority: Priority,
    /// The rendered output message.
    pub output: String,
    /// What the rule detects, in one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The fields the rule used, by Falco field name (`proc.name`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<Remediation>,
}

/// What to do about a finding, in the shape of a Defender for Cloud alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Remediation {
    /// e.g. `K8S.NODE_ImageBinaryDrift`.
    pub alert_type: String,
    pub description: String,
    pub steps: Vec<String>,
}

/// Whether an event continues down the chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Pass,
    /// End the event's path: later plugins and outputs never see it.
    Drop,
}

/// A plugin's answer for one event. The default (and the cheapest on the
/// wire: an empty map) is "pass, nothing to say".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Verdict {
    #[serde(skip_serializing_if = "is_pass")]
    pub action: Action,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// Tags added to the event for later plugins and outputs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Fields added to the event (`driftwatch.*` style keys), for outputs.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

fn is_pass(a: &Action) -> bool {
    *a == Action::Pass
}

impl Verdict {
    pub fn pass() -> Verdict {
        Verdict::default()
    }

    pub fn drop() -> Verdict {
        Verdict {
            action: Action::Drop,
            ..Verdict::default()
        }
    }

    /// Pass, with no findings, tags or fields: what [`Verdict::pass`] makes.
    pub fn is_pass(&self) -> bool {
        self.action == Action::Pass
            && self.findings.is_empty()
            && self.tags.is_empty()
            && self.fields.is_empty()
    }

    pub fn with_finding(finding: Finding) -> Verdict {
        Verdict {
            findings: vec![finding],
            ..Verdict::default()
        }
    }
}

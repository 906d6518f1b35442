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
    /// Findings by reference to rules declared in the manifest
    /// ([`crate::Manifest::with_rule`]): the host builds each finding from
    /// the rule's template and its own copy of the event, so the plugin
    /// renders, encodes and sends no strings at all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fired: Vec<Fired>,
}

/// One declared rule matched: a finding the host completes from the rule's
/// template ([`RuleSpec`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    /// The rule's index in the manifest's `rules`.
    pub rule: u32,
    pub priority: Priority,
    /// Fields only the plugin knows, added to (and overriding) the rule's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

/// A rule a plugin declares in its manifest: everything about its findings
/// that does not depend on the event. A plugin that declares its rules
/// answers with [`Fired`] (an index and a priority); the host renders the
/// output and the fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSpec {
    /// e.g. "Container Shell Spawned".
    pub name: String,
    /// The output template (`%proc.name` ..., see [`crate::fields::Template`]);
    /// the fields it names are reported too.
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Fields reported beyond the output's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<RuleField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<Remediation>,
}

impl Fired {
    /// Rule `rule` matched at `priority`, with no fields of the plugin's own.
    pub fn new(rule: u32, priority: Priority) -> Fired {
        Fired {
            rule,
            priority,
            fields: BTreeMap::new(),
        }
    }
}

/// One field a rule reports beyond its output's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleField {
    /// The key in the finding's fields (usually the field's own name).
    pub key: String,
    /// The Falco field name whose value it takes.
    pub field: String,
    /// Leave the key out when the event has no value; `<NA>` otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

impl RuleSpec {
    pub fn new(name: &str, output: &str) -> RuleSpec {
        RuleSpec {
            name: name.to_string(),
            output: output.to_string(),
            description: None,
            tags: Vec::new(),
            fields: Vec::new(),
            remediation: None,
        }
    }

    pub fn with_description(mut self, d: &str) -> RuleSpec {
        self.description = Some(d.to_string());
        self
    }

    pub fn with_tags(mut self, tags: &[&str]) -> RuleSpec {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }

    /// Reports each field under its own name, `<NA>` when absent.
    pub fn with_fields(self, names: &[&str]) -> RuleSpec {
        names.iter().fold(self, |r, n| r.with_field(n, n, false))
    }

    /// Reports `field` as `key`, `<NA>` when absent.
    pub fn with_field_as(self, key: &str, field: &str) -> RuleSpec {
        self.with_field(key, field, false)
    }

    /// Reports `field` as `key`, left out when absent.
    pub fn with_optional_field(self, key: &str, field: &str) -> RuleSpec {
        self.with_field(key, field, true)
    }

    fn with_field(mut self, key: &str, field: &str, optional: bool) -> RuleSpec {
        self.fields.push(RuleField {
            key: key.to_string(),
            field: field.to_string(),
            optional,
        });
        self
    }

    pub fn with_remediation(mut self, r: Option<Remediation>) -> RuleSpec {
        self.remediation = r;
        self
    }
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
            && self.fired.is_empty()
    }

    pub fn with_finding(finding: Finding) -> Verdict {
        Verdict {
            findings: vec![finding],
            ..Verdict::default()
        }
    }

    /// The declared rule at `rule` matched, at `priority`.
    pub fn fire(rule: u32, priority: Priority) -> Verdict {
        Verdict {
            fired: vec![Fired::new(rule, priority)],
            ..Verdict::default()
        }
    }
}

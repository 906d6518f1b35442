//! A plugin's declared rules ([`RuleSpec`]), compiled once, and the findings
//! built from them: what turns a [`Fired`] into a [`Finding`].
//!
//! The host builds findings here from its own copy of the event; a plugin's
//! tests and native callers use the same code, so a finding reads the same
//! wherever it was completed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::fields::{Field, NA, Template};
use crate::finding::{Finding, Fired, RuleSpec, Verdict};
use crate::{EventOf, Remediation};

/// Why a [`Fired`] could not become a finding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("verdict names rule {rule}, the manifest declares {declared}")]
pub struct UndeclaredRule {
    pub rule: u32,
    pub declared: usize,
}

/// The declared rules of one plugin, templates parsed and field names
/// resolved.
#[derive(Debug, Clone, Default)]
pub struct RuleTable {
    rules: Vec<Arc<DeclaredRule>>,
}

/// One declared rule, compiled: shared by every finding it makes, which
/// render their output and fields from it only when written out.
#[derive(Debug, PartialEq, Eq)]
pub struct DeclaredRule {
    name: String,
    description: Option<String>,
    tags: Vec<String>,
    output: Template,
    fields: Vec<(String, Field, bool)>,
    remediation: Option<Remediation>,
}

impl DeclaredRule {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    pub fn remediation(&self) -> Option<&Remediation> {
        self.remediation.as_ref()
    }

    /// The output message for `ev`.
    pub fn render<S: AsRef<str>>(&self, ev: &EventOf<S>) -> String {
        self.output.render(ev)
    }

    /// The rule's fields for `ev`, in order: the output's, then the
    /// declared ones. A later entry with the same key wins.
    pub fn fields<'e, S: AsRef<str>>(
        &'e self,
        ev: &'e EventOf<S>,
    ) -> impl Iterator<Item = (&'e str, Cow<'e, str>)> + 'e {
        let output = self
            .output
            .field_list()
            .map(|f| (f.name(), f.value(ev).unwrap_or(Cow::Borrowed(NA))));
        let declared =
            self.fields
                .iter()
                .filter_map(|(key, field, optional)| match field.value(ev) {
                    Some(v) => Some((key.as_str(), v)),
                    None if *optional => None,
                    None => Some((key.as_str(), Cow::Borrowed(NA))),
                });
        output.chain(declared)
    }
}

impl RuleTable {
    /// Compiles `specs`. An unknown field name, in the output or the
    /// fields, is an error naming the rule: a typo is caught when the plugin
    /// loads, not when it first fires.
    pub fn compile(specs: &[RuleSpec]) -> Result<RuleTable, String> {
        let rules = specs
            .iter()
            .map(|s| {
                let output =
                    Template::parse(&s.output).map_err(|e| format!("rule {:?}: {e}", s.name))?;
                let fields = s
                    .fields
                    .iter()
                    .map(|f| {
                        Field::parse(&f.field)
                            .map(|id| (f.key.clone(), id, f.optional))
                            .ok_or_else(|| {
                                format!("rule {:?}: unknown field {:?}", s.name, f.field)
                            })
                    })
                    .collect::<Result<_, String>>()?;
                Ok(Arc::new(DeclaredRule {
                    name: s.name.clone(),
                    description: s.description.clone(),
                    tags: s.tags.clone(),
                    output,
                    fields,
                    remediation: s.remediation.clone(),
                }))
            })
            .collect::<Result<_, String>>()?;
        Ok(RuleTable { rules })
    }

    /// Whether every rule `verdict` fires is declared.
    pub fn check(&self, verdict: &Verdict) -> Result<(), UndeclaredRule> {
        verdict.fired.iter().try_for_each(|f| self.get(f).map(drop))
    }

    /// The rule `fired` names.
    pub fn get(&self, fired: &Fired) -> Result<&Arc<DeclaredRule>, UndeclaredRule> {
        self.rules.get(fired.rule as usize).ok_or(UndeclaredRule {
            rule: fired.rule,
            declared: self.rules.len(),
        })
    }

    /// The finding `fired` stands for, for `ev`, rendered now.
    pub fn finding<S: AsRef<str>>(
        &self,
        fired: Fired,
        ev: &EventOf<S>,
    ) -> Result<Finding, UndeclaredRule> {
        let r = self.get(&fired)?;
        let mut fields = BTreeMap::new();
        for (k, v) in r.fields(ev) {
            fields.insert(k.to_string(), v.into_owned());
        }
        fields.extend(fired.fields);
        Ok(Finding {
            rule: r.name.clone(),
            priority: fired.priority,
            output: r.render(ev),
            description: r.description.clone(),
            tags: r.tags.clone(),
            fields,
            remediation: r.remediation.clone(),
        })
    }

    /// Moves `verdict`'s fired rules into its findings, in order, after the
    /// findings it spelled out.
    pub fn complete<S: AsRef<str>>(
        &self,
        verdict: &mut Verdict,
        ev: &EventOf<S>,
    ) -> Result<(), UndeclaredRule> {
        self.check(verdict)?;
        for fired in std::mem::take(&mut verdict.fired) {
            verdict.findings.push(self.finding(fired, ev)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Container, Event, Priority, Process};

    fn ev() -> Event {
        Event {
            process: Process {
                name: "sh".into(),
                ..Process::default()
            },
            container: Some(Container {
                name: Some("web".into()),
                ..Container::default()
            }),
            ..Event::default()
        }
    }

    fn table() -> RuleTable {
        RuleTable::compile(&[RuleSpec::new("A", "shell=%proc.name in %container.name")
            .with_description("why")
            .with_tags(&["container", "shell"])
            .with_fields(&["proc.pid", "fd.name"])
            .with_optional_field("action", "enforce.action")])
        .unwrap()
    }

    #[test]
    fn a_fired_rule_reads_as_the_finding_it_stands_for() {
        let mut f = table()
            .finding(
                Fired {
                    rule: 0,
                    priority: Priority::Notice,
                    fields: [("extra".to_string(), "1".to_string())].into(),
                },
                &ev(),
            )
            .unwrap();
        assert_eq!(f.rule, "A");
        assert_eq!(f.priority, Priority::Notice);
        assert_eq!(f.output, "shell=sh in web");
        assert_eq!(f.description.as_deref(), Some("why"));
        assert_eq!(f.tags, ["container", "shell"]);
        assert_eq!(f.fields.remove("proc.name").as_deref(), Some("sh"));
        assert_eq!(f.fields.remove("container.name").as_deref(), Some("web"));
        assert_eq!(f.fields.remove("proc.pid").as_deref(), Some("0"));
        // Absent: `<NA>`, or left out when optional.
        assert_eq!(f.fields.remove("fd.name").as_deref(), Some(NA));
        assert_eq!(f.fields.remove("extra").as_deref(), Some("1"));
        assert!(f.fields.is_empty(), "{:?}", f.fields);
    }

    #[test]
    fn undeclared_rules_and_unknown_fields_are_refused() {
        let mut v = Verdict::fire(1, Priority::Warning);
        assert_eq!(
            table().complete(&mut v, &ev()),
            Err(UndeclaredRule {
                rule: 1,
                declared: 1
            })
        );
        let e = RuleTable::compile(&[RuleSpec::new("B", "%proc.nam")]).unwrap_err();
        assert!(e.contains("rule \"B\"") && e.contains("proc.nam"), "{e}");
        let e = RuleTable::compile(&[RuleSpec::new("C", "x").with_fields(&["nope"])]).unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn completing_keeps_spelled_out_findings_first() {
        let mut v = Verdict::fire(0, Priority::Warning);
        v.findings.push(Finding {
            rule: "explicit".into(),
            priority: Priority::Debug,
            output: String::new(),
            description: None,
            tags: vec![],
            fields: Default::default(),
            remediation: None,
        });
        table().complete(&mut v, &ev()).unwrap();
        assert!(v.fired.is_empty());
        assert_eq!(
            v.findings
                .iter()
                .map(|f| f.rule.as_str())
                .collect::<Vec<_>>(),
            ["explicit", "A"]
        );
    }
}

//! SARIF 2.1.0 for `audit-manifests --sarif`, the format code-scanning UIs
//! ingest: one run, the audit's rules in `tool.driver.rules`, one result per
//! violation located at its file and line.

use std::path::Path;

use serde_json::{Value, json};

use super::audit::{AuditReport, RULES};

pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// The SARIF log for an audit. Paths are made relative to `base` when they
/// lie under it, as code-scanning UIs resolve them against the checkout.
pub fn to_sarif(report: &AuditReport, base: &Path) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name,
                "shortDescription": { "text": r.name },
                "fullDescription": { "text": r.description },
                "help": { "text": r.fix },
                "defaultConfiguration": { "level": "error" },
            })
        })
        .collect();
    let results: Vec<Value> = report
        .violations
        .iter()
        .map(|v| {
            let mut physical = json!({
                "artifactLocation": { "uri": uri(&v.file, base) },
            });
            if let Some(line) = v.line {
                physical["region"] = json!({ "startLine": line });
            }
            let logical = match &v.container {
                Some(c) => format!("{}/{c}", v.object),
                None => v.object.clone(),
            };
            json!({
                "ruleId": v.rule,
                "ruleIndex": RULES.iter().position(|r| r.id == v.rule).unwrap_or(0),
                "level": "error",
                "message": { "text": format!("{} (fix: {})", v.message, v.fix) },
                "locations": [{
                    "physicalLocation": physical,
                    "logicalLocations": [{ "fullyQualifiedName": logical, "kind": "object" }],
                }],
            })
        })
        .collect();
    let notifications: Vec<Value> = report
        .errors
        .iter()
        .map(|e| json!({ "level": "error", "message": { "text": e } }))
        .collect();
    json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "driftwatch",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
            "invocations": [{
                "executionSuccessful": report.errors.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
        }],
    })
}

/// A relative URI reference (forward slashes, percent-encoded) for `file`.
fn uri(file: &Path, base: &Path) -> String {
    let rel = file.strip_prefix(base).unwrap_or(file);
    let s = rel.to_string_lossy().replace('\\', "/");
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if rel.is_absolute() {
        format!("file://{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_relative_and_encoded() {
        assert_eq!(
            uri(Path::new("/r/a b/x.yaml"), Path::new("/r")),
            "a%20b/x.yaml"
        );
        assert_eq!(
            uri(Path::new("/o/x.yaml"), Path::new("/r")),
            "file:///o/x.yaml"
        );
        assert_eq!(uri(Path::new("d/x.yaml"), Path::new("/r")), "d/x.yaml");
    }
}

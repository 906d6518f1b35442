//! Prefilters: the conditions a plugin declares in its manifest so that the
//! host sends it only events that could matter to it.
//!
//! Most events are of no interest to most rules: the shell rule cares about
//! execs of shells in containers, and every other exec would cost it a
//! MessagePack decode inside the sandbox to say "pass". A plugin states a
//! *necessary* condition for a verdict other than pass; the host evaluates it
//! natively on every event and gives the plugin only the events that satisfy
//! it. An event a plugin does not get is treated exactly like a pass from it.
//!
//! The plugin still checks everything itself: a prefilter only has to be
//! wide enough (never drop an event the plugin would act on), not exact. A
//! host that predates prefilters ignores them and sends everything, which is
//! still correct.
//!
//! Conditions use Falco's field names ([`crate::fields`]) and a subset of its
//! operators (`in`, `pmatch`, `exists`, `not`, and `or` as [`Condition::Any`]).
//! The top-level list of a manifest is a conjunction.

use serde::{Deserialize, Serialize};

use crate::EventOf;
use crate::fields::Field;
use crate::rules::is_under;

/// One condition, as it travels in a [`crate::Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The field has a value and it equals one of `values`.
    In {
        field: String,
        values: Vec<String>,
    },
    /// The field has a value that is one of `prefixes` or a path below one
    /// (`/etc` matches `/etc` and `/etc/x`, not `/etcx`).
    Pmatch {
        field: String,
        prefixes: Vec<String>,
    },
    /// The field has a value.
    Exists {
        field: String,
    },
    Not(Box<Condition>),
    /// At least one holds.
    Any(Vec<Condition>),
}

impl Condition {
    pub fn is_in(field: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Condition {
        Condition::In {
            field: field.to_string(),
            values: strings(values),
        }
    }

    pub fn pmatch(field: &str, prefixes: impl IntoIterator<Item = impl Into<String>>) -> Condition {
        Condition::Pmatch {
            field: field.to_string(),
            prefixes: strings(prefixes),
        }
    }

    pub fn negate(c: Condition) -> Condition {
        Condition::Not(Box::new(c))
    }

    /// The field is `"true"` (the boolean fields such as
    /// `proc.is_exe_upper_layer`).
    pub fn is_true(field: &str) -> Condition {
        Condition::is_in(field, ["true"])
    }

    /// The event comes from a container: Falco's `container.id != host`.
    pub fn in_container() -> Condition {
        Condition::negate(Condition::is_in("container.id", ["host"]))
    }
}

fn strings(values: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    values.into_iter().map(Into::into).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefilterError {
    #[error("prefilter names unknown field {0:?}")]
    UnknownField(String),
    #[error("prefilter: `any` with no conditions can never hold")]
    EmptyAny,
}

/// A manifest's prefilter, with its field names resolved: cheap to evaluate
/// on every event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefilter {
    all: Vec<Test>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    In(Field, Vec<String>),
    Pmatch(Field, Vec<String>),
    Exists(Field),
    Not(Box<Test>),
    Any(Vec<Test>),
}

impl Prefilter {
    /// Resolves the conditions; an unknown field name is an error so that a
    /// typo cannot silently starve (or flood) a plugin.
    pub fn compile(conditions: &[Condition]) -> Result<Prefilter, PrefilterError> {
        Ok(Prefilter {
            all: conditions.iter().map(compile).collect::<Result<_, _>>()?,
        })
    }

    /// No conditions: every event of the plugin's kinds goes to it.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn matches<S: AsRef<str>>(&self, ev: &EventOf<S>) -> bool {
        self.all.iter().all(|t| t.holds(ev))
    }
}

fn compile(c: &Condition) -> Result<Test, PrefilterError> {
    let field =
        |name: &str| Field::parse(name).ok_or_else(|| PrefilterError::UnknownField(name.into()));
    Ok(match c {
        Condition::In { field: f, values } => Test::In(field(f)?, values.clone()),
        Condition::Pmatch { field: f, prefixes } => Test::Pmatch(field(f)?, prefixes.clone()),
        Condition::Exists { field: f } => Test::Exists(field(f)?),
        Condition::Not(inner) => Test::Not(Box::new(compile(inner)?)),
        Condition::Any(cs) if cs.is_empty() => return Err(PrefilterError::EmptyAny),
        Condition::Any(cs) => Test::Any(cs.iter().map(compile).collect::<Result<_, _>>()?),
    })
}

impl Test {
    fn holds<S: AsRef<str>>(&self, ev: &EventOf<S>) -> bool {
        match self {
            Test::In(f, values) => f.value(ev).is_some_and(|v| values.iter().any(|x| *x == *v)),
            Test::Pmatch(f, prefixes) => f
                .value(ev)
                .is_some_and(|v| prefixes.iter().any(|p| is_under(&v, p))),
            Test::Exists(f) => f.value(ev).is_some(),
            Test::Not(t) => !t.holds(ev),
            Test::Any(ts) => ts.iter().any(|t| t.holds(ev)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Container, Event, EventKind, FileInfo, FileType, Process};

    fn exec(name: &str, container: bool) -> Event {
        Event {
            kind: EventKind::Exec,
            process: Process {
                name: name.into(),
                ..Process::default()
            },
            container: container.then(|| Container {
                id: "ab".repeat(32),
                ..Container::default()
            }),
            ..Event::default()
        }
    }

    fn write(path: &str) -> Event {
        Event {
            kind: EventKind::OpenWrite,
            file: Some(FileInfo {
                path: path.into(),
                file_type: FileType::Regular,
                ..FileInfo::default()
            }),
            ..exec("app", true)
        }
    }

    fn compiled(cs: Vec<Condition>) -> Prefilter {
        Prefilter::compile(&cs).expect("valid prefilter")
    }

    #[test]
    fn an_empty_prefilter_takes_everything() {
        let p = compiled(vec![]);
        assert!(p.is_empty());
        assert!(p.matches(&exec("sh", false)));
    }

    #[test]
    fn conditions_are_a_conjunction() {
        let p = compiled(vec![
            Condition::in_container(),
            Condition::is_in("proc.name", ["sh", "bash"]),
        ]);
        assert!(p.matches(&exec("sh", true)));
        assert!(!p.matches(&exec("sh", false)), "host process");
        assert!(!p.matches(&exec("shx", true)), "names match whole");
        assert!(!p.matches(&exec("", true)), "no name is no match");
    }

    #[test]
    fn pmatch_is_path_aware_and_negatable() {
        let p = compiled(vec![
            Condition::is_in("fd.typechar", ["f"]),
            Condition::negate(Condition::pmatch("fd.name", ["/tmp", "/var/log/"])),
        ]);
        assert!(p.matches(&write("/etc/x")));
        assert!(p.matches(&write("/tmpx")));
        assert!(!p.matches(&write("/tmp")));
        assert!(!p.matches(&write("/tmp/a/b")));
        assert!(!p.matches(&write("/var/log/x")));
        // An exec has no fd.typechar: `in` does not hold.
        assert!(!p.matches(&exec("sh", true)));
    }

    #[test]
    fn any_exists_and_booleans() {
        let mut drifted = exec("x", true);
        drifted.process.exe_upper_layer = true;
        let p = compiled(vec![Condition::Any(vec![
            Condition::is_true("proc.is_exe_upper_layer"),
            Condition::is_true("proc.is_exe_from_memfd"),
        ])]);
        assert!(p.matches(&drifted));
        assert!(!p.matches(&exec("x", true)));
        let p = compiled(vec![Condition::Exists {
            field: "fd.name".into(),
        }]);
        assert!(p.matches(&write("/etc/x")));
        assert!(!p.matches(&exec("x", true)));
        // Works on borrowed events too.
        assert!(p.matches(&write("/etc/x").as_event_ref()));
    }

    #[test]
    fn bad_prefilters_are_refused() {
        assert_eq!(
            Prefilter::compile(&[Condition::is_in("proc.nmae", ["sh"])]),
            Err(PrefilterError::UnknownField("proc.nmae".into()))
        );
        assert_eq!(
            Prefilter::compile(&[Condition::negate(Condition::Any(vec![]))]),
            Err(PrefilterError::EmptyAny)
        );
    }

    #[test]
    fn conditions_survive_the_wire() {
        let cs = vec![
            Condition::in_container(),
            Condition::Any(vec![
                Condition::pmatch("fd.name", ["/etc"]),
                Condition::Exists {
                    field: "proc.name".into(),
                },
            ]),
        ];
        let bytes = crate::codec::encode(&cs).expect("encode");
        let back: Vec<Condition> = crate::codec::decode(&bytes).expect("decode");
        assert_eq!(back, cs);
    }
}

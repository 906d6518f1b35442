//! Showing a diff: filters, a table with counts for people, JSON for tools.

use std::io::{self, Write};

use driftwatch_sdk::FileType;
use serde::Serialize;

use super::{Change, Diff, Entry};
use crate::terminal::Escaped;

/// One `--only` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// Regular files with an execute bit or an ELF header.
    Executables,
    Change(Change),
}

impl std::str::FromStr for Only {
    type Err = String;
    fn from_str(s: &str) -> Result<Only, String> {
        Ok(match s {
            "executables" | "executable" | "exec" => Only::Executables,
            "added" => Only::Change(Change::Added),
            "modified" => Only::Change(Change::Modified),
            "metadata" => Only::Change(Change::Metadata),
            "removed" => Only::Change(Change::Removed),
            _ => {
                return Err(format!(
                    "unknown filter {s:?}: use executables, added, modified, metadata or removed"
                ));
            }
        })
    }
}

/// Which entries to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Kinds of change to keep (any of them); empty keeps every kind.
    pub changes: Vec<Change>,
    /// Keep only executables (combined with `changes`: both must hold).
    pub executables: bool,
    /// Also show what the runtime created.
    pub include_runtime: bool,
}

impl Filter {
    pub fn from_only(only: &[Only], include_runtime: bool) -> Filter {
        let mut f = Filter {
            include_runtime,
            ..Filter::default()
        };
        for o in only {
            match o {
                Only::Executables => f.executables = true,
                Only::Change(c) => f.changes.push(*c),
            }
        }
        f
    }

    pub fn keeps(&self, e: &Entry) -> bool {
        (self.include_runtime || !e.runtime_created)
            && (self.changes.is_empty() || self.changes.contains(&e.change))
            && (!self.executables || e.is_executable())
    }
}

/// Counts per kind of change among the shown entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub added: usize,
    pub modified: usize,
    pub metadata: usize,
    pub removed: usize,
    /// Shown entries that are executables.
    pub executables: usize,
    /// Runtime-created entries left out (see docs/diff.md).
    pub runtime_hidden: usize,
}

/// The entries a filter keeps, with their counts.
#[derive(Debug, Serialize)]
pub struct View<'a> {
    pub container: &'a super::Container,
    pub upper_dir: &'a std::path::Path,
    pub counts: Counts,
    pub entries: Vec<&'a Entry>,
    pub warnings: &'a [String],
    /// Upper-layer entries examined.
    pub examined: u64,
}

impl<'a> View<'a> {
    pub fn new(diff: &'a Diff, filter: &Filter) -> View<'a> {
        let mut counts = Counts::default();
        let mut entries = Vec::new();
        for e in &diff.entries {
            if !filter.keeps(e) {
                if e.runtime_created && !filter.include_runtime {
                    counts.runtime_hidden += 1;
                }
                continue;
            }
            match e.change {
                Change::Added => counts.added += 1,
                Change::Modified => counts.modified += 1,
                Change::Metadata => counts.metadata += 1,
                Change::Removed => counts.removed += 1,
            }
            counts.executables += usize::from(e.is_executable());
            entries.push(e);
        }
        View {
            container: &diff.container,
            upper_dir: &diff.upper_dir,
            counts,
            entries,
            warnings: &diff.warnings,
            examined: diff.examined,
        }
    }

    /// Drift: at least one entry shown.
    pub fn has_drift(&self) -> bool {
        !self.entries.is_empty()
    }

    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self).map_err(io::Error::other)?;
        writeln!(out)
    }

    /// A table, one line per entry, then the counts. `colour` adds ANSI
    /// colours per kind of change.
    pub fn write_table(&self, out: &mut impl Write, colour: bool) -> io::Result<()> {
        let c = self.container;
        writeln!(
            out,
            "container {} ({}) image {} pid {}",
            Escaped(c.name.as_deref().unwrap_or("-")),
            Escaped(c.short_id()),
            Escaped(c.image.as_deref().unwrap_or("-")),
            c.pid
        )?;
        if !self.entries.is_empty() {
            writeln!(
                out,
                "{:<9} {:<4} {:<5} {:>11} {:>10}  PATH",
                "CHANGE", "TYPE", "MODE", "UID:GID", "SIZE"
            )?;
        }
        for e in &self.entries {
            let (start, end) = if colour {
                (
                    match e.change {
                        Change::Added => "\x1b[32m",
                        Change::Modified => "\x1b[33m",
                        Change::Metadata => "\x1b[36m",
                        Change::Removed => "\x1b[31m",
                    },
                    "\x1b[0m",
                )
            } else {
                ("", "")
            };
            write!(
                out,
                "{start}{:<9}{end} {:<4} {:<5} {:>11} {:>10}  {}",
                e.change.as_str(),
                e.file_type.typechar(),
                e.mode,
                format!("{}:{}", e.uid, e.gid),
                e.size,
                Escaped(&e.path)
            )?;
            for note in notes(e) {
                write!(out, "  {note}")?;
            }
            writeln!(out)?;
        }
        let n = &self.counts;
        write!(
            out,
            "{} added, {} modified, {} metadata only, {} removed ({} executable)",
            n.added, n.modified, n.metadata, n.removed, n.executables
        )?;
        if n.runtime_hidden > 0 {
            write!(
                out,
                "; {} created by the runtime not shown (--include-runtime)",
                n.runtime_hidden
            )?;
        }
        writeln!(out)?;
        for w in self.warnings {
            writeln!(out, "warning: {}", Escaped(w))?;
        }
        Ok(())
    }
}

/// Short facts after the path: hash, executable, what changed.
fn notes(e: &Entry) -> Vec<String> {
    let mut v = Vec::new();
    if e.elf {
        v.push("elf".to_string());
    } else if e.executable {
        v.push("exec".to_string());
    }
    if let Some(t) = &e.link_target {
        v.push(format!("-> {}", Escaped(t)));
    }
    if let Some(img) = &e.image {
        let before = v.len();
        if img.file_type != e.file_type {
            v.push(format!(
                "type {}->{}",
                img.file_type.typechar(),
                e.file_type.typechar()
            ));
        }
        if img.mode != e.mode {
            v.push(format!("mode {}->{}", img.mode, e.mode));
        }
        if (img.uid, img.gid) != (e.uid, e.gid) {
            v.push(format!(
                "owner {}:{}->{}:{}",
                img.uid, img.gid, e.uid, e.gid
            ));
        }
        if e.change == Change::Metadata && e.file_type != FileType::Directory && v.len() == before {
            v.push("mtime".to_string());
        }
    }
    if let Some(h) = &e.sha256 {
        v.push(format!("sha256:{}", h.get(..16).unwrap_or(h)));
    }
    v
}

//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_driftwatch"));
    c.env("DRIFTWATCH_LOG", "warn");
    c
}

/// Where the build put the guest components (built-ins, example, hostile).
pub fn guest(name: &str) -> PathBuf {
    Path::new(driftwatch::plugin::builtin::GUEST_DIR).join(format!("{name}.wasm"))
}

/// A pipeline.toml in a temp dir whose compile cache is private to the test.
pub fn config(dir: &Path, body: &str) -> PathBuf {
    let cache = dir.join("cache");
    let text = format!(
        "[daemon]\ncache_dir = \"{}\"\nstats_interval_secs = 0\nhot_reload = false\n\n{body}",
        cache.display()
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).expect("writing test config");
    p
}

/// stdout parsed as JSON lines.
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

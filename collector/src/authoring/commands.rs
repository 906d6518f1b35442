//! The `driftwatch plugin new|build|test` commands: what they print and
//! their exit statuses, over [`super::scaffold`], [`super::build`] and
//! [`super::trial`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::build::{Language, build};
use super::scaffold::Scaffold;
use super::trial;
use crate::plugin::host::Limits;

/// `plugin new NAME [--dir DIR] [--sdk PATH]`. Exit status 0.
pub fn new(name: &str, dir: Option<PathBuf>, sdk: Option<PathBuf>) -> Result<u8> {
    let s = Scaffold::new(name, dir, sdk)?;
    let files = s.write()?;
    for f in &files {
        println!("created {}", f.display());
    }
    let wasm = format!("{}.wasm", s.name.replace('-', "_"));
    println!(
        "\nNext:\n  cd {dir}\n  cargo test\n  driftwatch plugin build . --out {wasm}\n  \
         driftwatch plugin test {wasm} EVENTS.jsonl",
        dir = s.dir.display(),
    );
    Ok(0)
}

/// `plugin build [DIR] [--out FILE] [--sdk PATH]`: builds, then loads and
/// initializes the component with an empty config, so what is printed is
/// a plugin the daemon accepts. Exit status 0.
pub fn build_command(
    dir: &Path,
    out: Option<&Path>,
    sdk: Option<&Path>,
    cache_dir: Option<&Path>,
) -> Result<u8> {
    let lang = Language::of(dir)?;
    let built = build(dir, out, sdk).with_context(|| format!("building {}", dir.display()))?;
    let size = std::fs::metadata(&built).map(|m| m.len()).unwrap_or(0);
    let plugin = trial::load(&built, &serde_json::json!({}), Limits::default(), cache_dir)?;
    let inst = plugin
        .instantiate()
        .with_context(|| format!("{} was built but does not start", built.display()))?;
    let m = inst.manifest();
    let kinds: Vec<&str> = m.kinds.iter().map(|k| k.as_str()).collect();
    let mib = |b: f64| b / f64::from(1 << 20);
    println!(
        "built {} ({lang:?}, {:.1} MiB, {:.1} MiB of memory per instance): {} {} [{}]",
        built.display(),
        mib(size as f64),
        mib(inst.memory_bytes() as f64),
        m.name,
        m.version,
        kinds.join(", ")
    );
    Ok(0)
}

/// `plugin test PLUGIN EVENTS [--config-json JSON] [--deadline-ms N]`.
/// Exit status: 0 nothing fired, 1 something fired, 2 an error.
pub fn test(
    plugin: &Path,
    events: &Path,
    config_json: &str,
    deadline_ms: u64,
    cache_dir: Option<&Path>,
) -> Result<u8> {
    let config: serde_json::Value =
        serde_json::from_str(config_json).context("--config-json is not valid JSON")?;
    let limits = Limits::new(
        Limits::DEFAULT_MEMORY_MIB,
        deadline_ms,
        Limits::DEFAULT_MAX_OUTPUT_MIB,
    );
    let loaded = trial::load(plugin, &config, limits, cache_dir)?;
    let events = trial::read_events(events)?;
    let hostname = crate::host::hostname(None);
    let summary = trial::run(
        &loaded,
        events,
        &hostname,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )?;
    Ok(summary.exit_code())
}

//! `driftwatch plugin new`: a plugin crate that builds and passes its own
//! test as written, for authors to edit rather than copy by hand.

use std::path::{Path, PathBuf};

use super::{AuthoringError, io_error};

/// What `plugin new` creates.
pub struct Scaffold {
    /// The crate's package name (as given, checked).
    pub name: String,
    pub dir: PathBuf,
    /// The driftwatch SDK the crate depends on by path.
    pub sdk: PathBuf,
}

/// The SDK this binary was built from, when its checkout is still there.
/// Falls back to an `sdk/` beside an ancestor of the executable (a
/// checkout's `target/*/driftwatch`).
pub fn find_sdk() -> Option<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    let mut candidates = vec![built_from];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|d| d.join("sdk")));
    }
    candidates
        .into_iter()
        .find(|d| is_sdk(d))
        .and_then(|d| d.canonicalize().ok())
}

fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .is_ok_and(|t| t.contains("name = \"driftwatch-sdk\""))
        && dir.join("wit/plugin.wit").is_file()
}

/// Checks a plugin name: it becomes a crate name, a file name and the
/// manifest's name, so only lowercase letters, digits and dashes.
pub fn check_name(name: &str) -> Result<(), AuthoringError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(AuthoringError::Usage(format!(
            "plugin name {name:?}: use lowercase letters, digits and dashes, starting with a \
             letter (e.g. `crypto-miner`)"
        )))
    }
}

impl Scaffold {
    /// `dir` defaults to `./NAME`; `sdk` to [`find_sdk`].
    pub fn new(
        name: &str,
        dir: Option<PathBuf>,
        sdk: Option<PathBuf>,
    ) -> Result<Scaffold, AuthoringError> {
        check_name(name)?;
        let sdk = match sdk {
            Some(s) if is_sdk(&s) => s.canonicalize().map_err(io_error(&s))?,
            Some(s) => {
                return Err(AuthoringError::Usage(format!(
                    "--sdk {}: not the driftwatch SDK (expected a directory with a Cargo.toml \
                     naming driftwatch-sdk and wit/plugin.wit: a driftwatch checkout's sdk/)",
                    s.display()
                )));
            }
            None => find_sdk().ok_or_else(|| {
                AuthoringError::Usage(
                    "cannot find the driftwatch SDK this binary was built from; pass \
                     --sdk PATH to a driftwatch checkout's sdk/ directory"
                        .into(),
                )
            })?,
        };
        Ok(Scaffold {
            name: name.to_string(),
            dir: dir.unwrap_or_else(|| PathBuf::from(name)),
            sdk,
        })
    }

    /// Writes the crate. Refuses a directory that exists and is not empty,
    /// so nobody's work is overwritten.
    pub fn write(&self) -> Result<Vec<PathBuf>, AuthoringError> {
        if std::fs::read_dir(&self.dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(AuthoringError::Usage(format!(
                "{} exists and is not empty; choose another --dir",
                self.dir.display()
            )));
        }
        let src = self.dir.join("src");
        std::fs::create_dir_all(&src).map_err(io_error(&src))?;
        let files = [
            ("Cargo.toml", self.cargo_toml()),
            ("src/lib.rs", self.lib_rs()),
            ("README.md", self.readme()),
            (".gitignore", "/target\n/*.wasm\n".to_string()),
        ];
        let mut written = Vec::new();
        for (rel, text) in files {
            let path = self.dir.join(rel);
            std::fs::write(&path, text).map_err(io_error(&path))?;
            written.push(path);
        }
        // The SDK's checkout pins the versions it is tested with (serde,
        // rmp, wit-bindgen); starting from its lock builds with those, and
        // offline when they are already downloaded. Cargo drops the rest.
        let lock = self.sdk.join("../Cargo.lock");
        if lock.is_file() {
            let path = self.dir.join("Cargo.lock");
            std::fs::copy(&lock, &path).map_err(io_error(&path))?;
            written.push(path);
        }
        Ok(written)
    }

    fn cargo_toml(&self) -> String {
        // toml's string escaping, for a path with quotes or backslashes.
        let sdk = toml::Value::String(self.sdk.display().to_string());
        format!(
            r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the WebAssembly module `driftwatch plugin build` turns into a
# component; rlib: `cargo test` runs the rule natively.
crate-type = ["cdylib", "rlib"]

[dependencies]
driftwatch-sdk = {{ path = {sdk}, features = ["guest"] }}
serde = {{ version = "1", features = ["derive"] }}

[package.metadata.driftwatch]
guest = true

# Its own workspace, so the crate builds wherever it is created.
[workspace]

[profile.release]
# Every event the plugin asks for goes through it: optimize fully.
opt-level = 3
lto = true
codegen-units = 1
"#,
            name = self.name,
        )
    }

    fn lib_rs(&self) -> String {
        let title = self.name.replace('-', " ");
        let ty: String = self
            .name
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect();
        LIB_RS
            .replace("{name}", &self.name)
            .replace("{Type}", &ty)
            .replace("{title}", &title)
    }

    fn readme(&self) -> String {
        README
            .replace("{name}", &self.name)
            .replace("{wasm}", &format!("{}.wasm", self.name.replace('-', "_")))
    }
}

const LIB_RS: &str = r#"//! {title}: a driftwatch detection. Edit the rule in `process`; the
//! test below shows how to check it without building a component.

use driftwatch_sdk::fields::Template;
use driftwatch_sdk::{
    Condition, EventKind, EventRef, Finding, Manifest, Plugin, Priority, Verdict,
};
use serde::Deserialize;

/// The plugin's `[plugins.config]` table in pipeline.toml.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Process names (`proc.name`) that raise a finding inside a container.
    pub names: Vec<String>,
    pub priority: Priority,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            names: vec!["wget".into(), "curl".into()],
            priority: Priority::Notice,
        }
    }
}

pub struct {Type} {
    cfg: Config,
    output: Template,
}

impl Plugin for {Type} {
    type Config = Config;

    fn new(cfg: Config) -> Result<Self, String> {
        // An unknown %field is an init error, reported by the host.
        let output = Template::parse(
            "Download tool run in container (command=%proc.cmdline container=%container.name image=%container.image.repository)",
        )?;
        Ok({Type} { cfg, output })
    }

    fn manifest(&self) -> Manifest {
        Manifest::new("{name}", env!("CARGO_PKG_VERSION"), &[EventKind::Exec])
            // Only container execs of these names cross into the sandbox.
            .with_prefilter([
                Condition::in_container(),
                Condition::is_in("proc.name", &self.cfg.names),
            ])
    }

    fn process(&mut self, ev: &EventRef<'_>) -> Verdict {
        if ev.container.is_none() || !self.cfg.names.iter().any(|n| n == ev.process.name) {
            return Verdict::pass();
        }
        Verdict::with_finding(Finding {
            rule: "Download tool in container".into(),
            priority: self.cfg.priority,
            output: self.output.render(ev),
            description: None,
            tags: vec!["container".into()],
            fields: self.output.fields(ev),
            remediation: None,
        })
    }
}

driftwatch_sdk::export_plugin!({Type});

#[cfg(test)]
mod tests {
    use driftwatch_sdk::{Container, Event, Process};

    use super::*;

    fn exec(name: &str, in_container: bool) -> Event {
        Event {
            kind: EventKind::Exec,
            process: Process {
                name: name.into(),
                args: vec![name.into(), "http://example.invalid/x".into()],
                ..Process::default()
            },
            container: in_container.then(|| Container {
                id: "c".repeat(64),
                name: Some("web".into()),
                ..Container::default()
            }),
            ..Event::default()
        }
    }

    #[test]
    fn fires_on_a_listed_tool_in_a_container_only() {
        let mut p = {Type}::new(Config::default()).unwrap();
        let v = p.process(&exec("curl", true).as_event_ref());
        assert_eq!(v.findings.len(), 1);
        assert_eq!(v.findings[0].priority, Priority::Notice);
        assert!(v.findings[0].output.contains("container=web"), "{}", v.findings[0].output);
        assert!(p.process(&exec("curl", false).as_event_ref()).findings.is_empty());
        assert!(p.process(&exec("ls", true).as_event_ref()).findings.is_empty());
    }
}
"#;

const README: &str = r#"# {name}

A driftwatch detection plugin (a WebAssembly component). See the project's
docs/writing-plugins.md for the SDK, the event fields and the sandbox.

```sh
cargo test                                   # the rule, natively
driftwatch plugin build . --out {wasm}       # the component
driftwatch plugin test {wasm} events.jsonl   # recorded events through it
```

`plugin test` prints each finding as the daemon's Falco JSON line and exits 1
when something fired, 0 when nothing did, 2 on an error. To run it in the
daemon, add to pipeline.toml:

```toml
[[plugins]]
name = "{name}"
path = "/path/to/{wasm}"
[plugins.config]
names = ["wget", "curl"]
```
"#;

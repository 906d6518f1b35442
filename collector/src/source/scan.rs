//! The periodic drift scan: every `interval_secs`, diff each running
//! container in scope against its image and emit a `file_drift` event per
//! difference not reported before. This catches drift that happened while
//! the sensor was not running, or that no kernel event describes.
//!
//! "Reported before" is remembered per container as a set of fingerprints
//! (path, kind of change, type, mode, owner, content hash, link target):
//! the same difference is reported once, a further change to the same path
//! (new content, new mode) is a new difference. The set is replaced by each
//! scan's, so a difference that goes away and comes back is reported
//! again, and a container's memory is dropped when it stops running.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use driftwatch_sdk::{Event, EventKind, FileInfo};
use sha2::{Digest, Sha256};

use super::{BoxFuture, Source, SourceContext, SourceError};
use crate::config::ScanConfig;
use crate::container::{Endpoints, Runtimes};
use crate::fsdiff::{self, Container, Entry, Resolver};
use crate::terminal::Escaped;

type Fingerprint = [u8; 16];

pub struct Scan {
    cfg: ScanConfig,
    resolver: Resolver,
    /// Fingerprints of the differences reported, by container id.
    reported: HashMap<String, HashSet<Fingerprint>>,
}

impl Scan {
    /// A scan of the containers of the runtimes at their default endpoints
    /// (podman's at `cfg.storage_root` when set).
    pub fn new(cfg: ScanConfig) -> Scan {
        let mut endpoints = Endpoints::default();
        if let Some(root) = &cfg.storage_root {
            endpoints.podman_root = root.clone();
        }
        Scan::with_runtimes(cfg, Runtimes::new(&endpoints))
    }

    /// A scan of `runtimes`' containers.
    pub fn with_runtimes(cfg: ScanConfig, runtimes: Runtimes) -> Scan {
        let resolver = Resolver::new(runtimes);
        Scan {
            cfg,
            resolver,
            reported: HashMap::new(),
        }
    }

    fn in_scope(&self, c: &Container) -> bool {
        self.cfg.containers.is_empty()
            || self
                .cfg
                .containers
                .iter()
                .any(|s| c.name.as_deref() == Some(s.as_str()) || c.id.starts_with(s.as_str()))
    }

    /// One pass over the running containers in scope: the events to emit.
    /// Containers that cannot be diffed are logged and skipped; their
    /// memory is kept so a transient failure does not re-report.
    async fn scan_once(&mut self, hostname: &str) -> Result<Vec<Event>, SourceError> {
        let running = self
            .resolver
            .running()
            .await
            .map_err(|e| fail(format!("listing containers: {e}")))?;
        let running: Vec<Container> = running.into_iter().filter(|c| self.in_scope(c)).collect();
        let live: HashSet<String> = running.iter().map(|c| c.id.clone()).collect();
        self.reported.retain(|id, _| live.contains(id));

        let mut events = Vec::new();
        for c in running {
            let opts = fsdiff::Options {
                jobs: self.cfg.jobs,
            };
            let target = c.clone();
            let diff = tokio::task::spawn_blocking(move || fsdiff::diff_container(&target, &opts))
                .await
                .map_err(|e| fail(format!("diff of {} panicked: {e}", c.id)))?;
            let diff = match diff {
                Ok(d) => d,
                Err(e) => {
                    // Stopped between listing and diffing, or not overlay.
                    tracing::warn!(
                        container = %c.id,
                        "drift scan skipped: {}",
                        Escaped(&e.to_string())
                    );
                    continue;
                }
            };
            // What could not be examined is a blind spot (a binary hidden
            // below it is missed): said at warn level, once per container
            // and pass, with the first cause; the rest at debug.
            if let Some(first) = diff.warnings.first() {
                tracing::warn!(
                    container = %c.id,
                    warnings = diff.warnings.len(),
                    "drift scan incomplete: {}",
                    Escaped(first)
                );
            }
            for w in diff.warnings.iter().skip(1) {
                tracing::debug!(container = %c.id, "drift scan: {}", Escaped(w));
            }
            let event_container = c.to_event_container();
            let before = self.reported.remove(&c.id).unwrap_or_default();
            let mut now = HashSet::with_capacity(diff.entries.len());
            for e in &diff.entries {
                if e.runtime_created && !self.cfg.include_runtime_files {
                    continue;
                }
                let fp = fingerprint(e);
                if !before.contains(&fp) {
                    events.push(event(e, &event_container, hostname));
                }
                now.insert(fp);
            }
            self.reported.insert(c.id.clone(), now);
        }
        Ok(events)
    }
}

fn fail(message: String) -> SourceError {
    SourceError::Failed {
        source_name: "scan",
        source: message.into(),
    }
}

fn fingerprint(e: &Entry) -> Fingerprint {
    let mut h = Sha256::new();
    for part in [
        e.path.as_str(),
        e.change.as_str(),
        e.file_type.typechar().encode_utf8(&mut [0; 4]),
        e.mode.as_str(),
        &e.uid.to_string(),
        &e.gid.to_string(),
        e.sha256.as_deref().unwrap_or(""),
        e.link_target.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        // A separator no path part contains unescaped.
        h.update([0u8]);
    }
    let mut fp = [0u8; 16];
    fp.copy_from_slice(&h.finalize()[..16]);
    fp
}

/// The `file_drift` event for one difference.
pub fn event(e: &Entry, container: &driftwatch_sdk::Container, hostname: &str) -> Event {
    let time_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Event {
        time_ns,
        kind: EventKind::FileDrift,
        hostname: hostname.to_string(),
        container: Some(container.clone()),
        file: Some(FileInfo {
            path: e.path.clone(),
            mode: u32::from_str_radix(&e.mode, 8).unwrap_or(0),
            file_type: e.file_type,
            upper_layer: e.change != fsdiff::Change::Removed,
            change: Some(e.change),
            sha256: e.sha256.clone(),
            size: Some(e.size),
            uid: Some(e.uid),
            gid: Some(e.gid),
            executable: e.executable,
            elf: e.elf,
            ..FileInfo::default()
        }),
        ..Event::default()
    }
}

impl Source for Scan {
    fn run(mut self: Box<Self>, mut ctx: SourceContext) -> BoxFuture<Result<(), SourceError>> {
        Box::pin(async move {
            let every = Duration::from_secs(self.cfg.interval_secs);
            tracing::info!(
                interval_secs = self.cfg.interval_secs,
                runtimes = ?self.resolver.runtimes(),
                "drift scan started"
            );
            loop {
                if *ctx.shutdown.borrow() {
                    return Ok(());
                }
                let started = tokio::time::Instant::now();
                match self.scan_once(&ctx.hostname).await {
                    Ok(events) => {
                        for ev in events {
                            if ctx.events.send(ev).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    // A failed pass (e.g. /proc unreadable) is retried next time.
                    Err(e) => tracing::error!("{e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(started + every) => {}
                    r = ctx.shutdown.changed() => {
                        if r.is_err() || *ctx.shutdown.borrow() {
                            return Ok(());
                        }
                    }
                }
            }
        })
    }
}

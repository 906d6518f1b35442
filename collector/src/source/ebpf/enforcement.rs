//! `[enforcement]` into the kernel's policy maps (docs/enforcement.md): the
//! one module that writes them, at start-up, on every reload, and as
//! containers are classified against the scope lists.
//!
//! A policy is written whole into the slot the kernel is not reading, then
//! the one-word `ACTIVE` flips to it: an exec is judged by the old policy or
//! the new one, never by half of each. Nothing is reloaded or reattached.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aya::Ebpf;
use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError};
use driftwatch_common::{PathHash, PathKey, Policy, ScopeKey, list, mode, policy_flag};
use driftwatch_sdk::Event;

use super::{EbpfError, take_map};
use crate::config::{EnforcementConfig, EnforcementMode};

/// The policy maps, shared by the reloader and the chain thread.
pub type Enforcer = Arc<Mutex<PolicyMaps>>;

/// Containers remembered for re-classification on reload; beyond this the
/// memory is dropped and refilled by the next execs.
const REMEMBERED: usize = 16384;

/// What the scope lists are matched against, as userspace learned it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub name: Option<String>,
    pub image: Option<String>,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl Subject {
    /// The container of `ev`, when the enrichers know it by name or image.
    pub fn of(ev: &Event) -> Option<Subject> {
        let c = ev.container.as_ref()?;
        if c.name.is_none() && c.image_repository.is_none() {
            return None;
        }
        let k = ev.k8s.as_ref();
        Some(Subject {
            name: c.name.clone(),
            image: c.image_repository.clone(),
            namespace: k.and_then(|k| k.namespace.clone()),
            labels: k.map(|k| k.labels.clone()).unwrap_or_default(),
        })
    }
}

/// Whether `s` is in the scope of `cfg`: every non-empty list matches.
pub fn in_scope(cfg: &EnforcementConfig, s: &Subject) -> bool {
    let one_of = |list: &[String], v: &Option<String>| {
        list.is_empty() || v.as_ref().is_some_and(|v| list.iter().any(|x| x == v))
    };
    one_of(&cfg.containers, &s.name)
        && one_of(&cfg.images, &s.image)
        && one_of(&cfg.namespaces, &s.namespace)
        && cfg
            .labels
            .iter()
            .all(|(k, v)| s.labels.get(k).is_some_and(|have| have == v))
}

/// The `PATHS` keys of `cfg`, for slot `slot`.
pub fn path_keys(cfg: &EnforcementConfig, slot: u32) -> Vec<PathKey> {
    let mut keys = Vec::new();
    for (entries, exact, dir) in [
        (&cfg.allow_paths, list::ALLOW_PATH, list::ALLOW_PATH_DIR),
        (
            &cfg.allow_parents,
            list::ALLOW_PARENT,
            list::ALLOW_PARENT_DIR,
        ),
        (&cfg.deny_binaries, list::DENY, list::DENY_DIR),
    ] {
        for p in entries {
            // A directory entry is matched by the files' `dir` hash, which
            // is the directory's own `full` one.
            let list = if p.ends_with('/') { dir } else { exact };
            let hash = PathHash::of_path(p).full;
            keys.push(PathKey { hash, list, slot });
        }
    }
    keys
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> EbpfError {
    move |source| EbpfError::Map { name, source }
}

/// The kernel's policy maps and what was last written into them.
pub struct PolicyMaps {
    active: Array<MapData, u32>,
    policy: Array<MapData, Policy>,
    paths: BpfHashMap<MapData, PathKey, u8>,
    scope: BpfHashMap<MapData, ScopeKey, u32>,
    /// The slot `ACTIVE` names.
    slot: u32,
    host_mnt_ns: u64,
    cfg: EnforcementConfig,
    /// Containers classified so far, by cgroup id.
    known: HashMap<u64, Subject>,
}

impl PolicyMaps {
    /// Takes the maps out of `bpf` and writes `cfg` into them.
    pub fn take(
        bpf: &mut Ebpf,
        cfg: &EnforcementConfig,
        host_mnt_ns: u64,
    ) -> Result<PolicyMaps, EbpfError> {
        let mut maps = PolicyMaps {
            active: take_map(bpf, "ACTIVE")?,
            policy: take_map(bpf, "POLICY")?,
            paths: take_map(bpf, "PATHS")?,
            scope: take_map(bpf, "SCOPE")?,
            slot: 0,
            host_mnt_ns,
            cfg: cfg.clone(),
            known: HashMap::new(),
        };
        maps.apply(cfg)?;
        Ok(maps)
    }

    /// Writes `cfg` into the idle slot, then makes it the active one.
    pub fn apply(&mut self, cfg: &EnforcementConfig) -> Result<(), EbpfError> {
        let next = 1 - self.slot;
        // Leftovers of the policy before last.
        let stale: Vec<PathKey> = self
            .paths
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == next)
            .collect();
        for k in stale {
            let _ = self.paths.remove(&k);
        }
        let stale: Vec<ScopeKey> = self
            .scope
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == next)
            .collect();
        for k in stale {
            let _ = self.scope.remove(&k);
        }
        for key in path_keys(cfg, next) {
            self.paths.insert(key, 1, 0).map_err(map_err("PATHS"))?;
        }
        if cfg.scoped() {
            for (cgroup_id, subject) in &self.known {
                let key = ScopeKey {
                    cgroup_id: *cgroup_id,
                    slot: next,
                    _pad: 0,
                };
                let v = u32::from(in_scope(cfg, subject));
                self.scope.insert(key, v, 0).map_err(map_err("SCOPE"))?;
            }
        }
        let mut flags = 0;
        if cfg.scoped() {
            flags |= policy_flag::SCOPED;
        }
        if cfg.kill_init {
            flags |= policy_flag::KILL_INIT;
        }
        if !cfg.allow_paths.is_empty() || !cfg.deny_binaries.is_empty() {
            flags |= policy_flag::EXE_PATHS;
        }
        if !cfg.allow_parents.is_empty() {
            flags |= policy_flag::PARENT_PATHS;
        }
        let policy = Policy {
            mode: match cfg.mode {
                EnforcementMode::Detect => mode::DETECT,
                EnforcementMode::Enforce => mode::ENFORCE,
            },
            flags,
            host_mnt_ns: self.host_mnt_ns,
        };
        self.policy
            .set(next, policy, 0)
            .map_err(map_err("POLICY"))?;
        // The flip: one aligned word.
        self.active.set(0, next, 0).map_err(map_err("ACTIVE"))?;
        self.slot = next;
        self.cfg = cfg.clone();
        tracing::info!(
            mode = ?cfg.mode,
            scoped = cfg.scoped(),
            allow_paths = cfg.allow_paths.len(),
            allow_parents = cfg.allow_parents.len(),
            deny_binaries = cfg.deny_binaries.len(),
            kill_init = cfg.kill_init,
            "enforcement policy written"
        );
        Ok(())
    }

    /// Notes the container of an exec: with scope lists set, the kernel
    /// judges its next execs (not before: see docs/enforcement.md).
    pub fn learn(&mut self, ev: &Event) {
        let Some(subject) = Subject::of(ev) else {
            return;
        };
        let cgroup_id = ev.process.cgroup_id;
        if cgroup_id == 0 || self.known.get(&cgroup_id) == Some(&subject) {
            return;
        }
        if self.cfg.scoped() {
            let key = ScopeKey {
                cgroup_id,
                slot: self.slot,
                _pad: 0,
            };
            let v = u32::from(in_scope(&self.cfg, &subject));
            if let Err(e) = self.scope.insert(key, v, 0) {
                tracing::warn!(
                    cgroup_id,
                    "enforcement scope of a container not written: {e}"
                );
            }
        }
        if self.known.len() >= REMEMBERED {
            self.known.clear();
        }
        self.known.insert(cgroup_id, subject);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(name: &str, image: &str) -> Subject {
        Subject {
            name: Some(name.into()),
            image: Some(image.into()),
            ..Subject::default()
        }
    }

    #[test]
    fn every_non_empty_scope_list_must_match() {
        let mut cfg = EnforcementConfig::default();
        assert!(in_scope(&cfg, &subject("a", "img")));
        cfg.containers = vec!["a".into()];
        assert!(in_scope(&cfg, &subject("a", "img")));
        assert!(!in_scope(&cfg, &subject("b", "img")));
        cfg.images = vec!["other".into()];
        assert!(!in_scope(&cfg, &subject("a", "img")));
        cfg.images = vec!["img".into()];
        cfg.labels.insert("app".into(), "web".into());
        assert!(!in_scope(&cfg, &subject("a", "img")), "no labels at all");
        let mut s = subject("a", "img");
        s.labels.insert("app".into(), "web".into());
        assert!(in_scope(&cfg, &s));
    }

    #[test]
    fn a_trailing_slash_is_a_directory_entry() {
        let cfg = EnforcementConfig {
            allow_paths: vec!["/opt/tools/".into(), "/tmp/x".into()],
            ..EnforcementConfig::default()
        };
        let keys = path_keys(&cfg, 1);
        assert_eq!(keys[0].list, list::ALLOW_PATH_DIR);
        assert_eq!(keys[0].hash, PathHash::of_path("/opt/tools").full);
        assert_eq!(keys[1].list, list::ALLOW_PATH);
        assert!(keys.iter().all(|k| k.slot == 1));
    }
}

//! Container metadata, cached, for enrichment that never waits.
//!
//! The plugin chain's thread only reads the cache ([`MetadataCache::get`]:
//! a read lock and a hash lookup). Everything that talks to a runtime runs
//! on the daemon's async runtime, in [`start`]'s tasks:
//!
//! - at start, and whenever a runtime (re)appears, every runtime that can
//!   list its containers is listed into the cache;
//! - each runtime's event stream (Docker's `/events`, containerd's
//!   `Subscribe`, inotify on podman's state) adds a container as it is
//!   created, before its first process runs, and removes it when it goes
//!   away;
//! - a cache miss on the chain thread is only a request ([`Request`]): the
//!   event meanwhile says unknown, never a guess, and the answer serves the
//!   container's next events;
//! - every [`RESYNC`] the listing is taken again (and CRI-O, which cannot
//!   list, is asked about each of its cached containers), which also drops
//!   whatever an event stream missed.
//!
//! A runtime that is absent or down costs nothing: the first failure is
//! logged once, and the runtime is left alone for [`RETRY_DOWN`] before it
//! is tried again, quietly. When it answers again that is logged once too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use driftwatch_sdk::{Container, K8s, Runtime};
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};

use super::{Change, KnownContainer, RuntimeClient, RuntimeError, Runtimes};
use crate::error::with_causes;

/// How long a runtime that is not there is left alone.
pub const RETRY_DOWN: Duration = Duration::from_secs(30);
/// How often every runtime's listing is taken again.
pub const RESYNC: Duration = Duration::from_secs(60);
/// How long a removed container's late answers are ignored.
const TOMBSTONE: Duration = Duration::from_secs(60);
/// Lookups in flight at most.
const LOOKUPS: usize = 4;
/// Containers remembered at most; past that the cache starts over.
const MAX_ENTRIES: usize = 16_384;

/// What the cache holds about one container, as events carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub container: Container,
    pub k8s: Option<K8s>,
    runtime: Option<Runtime>,
}

impl Entry {
    fn from_known(k: &KnownContainer) -> Entry {
        let (container, k8s) = k.to_event();
        Entry {
            runtime: k.runtime.clone(),
            container,
            k8s,
        }
    }
}

/// Container id → what its runtime said.
#[derive(Debug, Default)]
pub struct MetadataCache {
    entries: RwLock<HashMap<String, Arc<Entry>>>,
    /// Ids removed recently, and when.
    removed: Mutex<HashMap<String, Instant>>,
}

impl MetadataCache {
    /// What the cache knows of container `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        // A poisoned lock only means a writer panicked between whole
        // inserts; the map is still usable.
        let g = self.entries.read().unwrap_or_else(|p| p.into_inner());
        g.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds what a lookup found, unless the container was removed since
    /// the lookup began.
    fn insert(&self, k: &KnownContainer, overwrite: bool) {
        {
            let removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
            if removed
                .get(&k.id)
                .is_some_and(|at| at.elapsed() < TOMBSTONE)
            {
                return;
            }
        }
        let mut g = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if g.len() >= MAX_ENTRIES && !g.contains_key(&k.id) {
            g.clear();
        }
        if overwrite || !g.contains_key(&k.id) {
            g.insert(k.id.clone(), Arc::new(Entry::from_known(k)));
        }
    }

    fn remove(&self, id: &str) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let mut removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        removed.retain(|_, at| at.elapsed() < TOMBSTONE);
        removed.insert(id.to_string(), Instant::now());
    }

    /// A container (re)created with an id that was removed: its answers count.
    fn created(&self, id: &str) {
        self.removed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Makes `runtime`'s entries those of `listed`: gone ones leave, new
    /// ones come; ones already known keep what the (richer) lookup said.
    fn replace(&self, runtime: &Runtime, listed: &[KnownContainer]) {
        let ids: std::collections::HashSet<&str> = listed.iter().map(|k| k.id.as_str()).collect();
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, e| e.runtime.as_ref() != Some(runtime) || ids.contains(id.as_str()));
        for k in listed {
            self.insert(k, false);
        }
    }

    fn ids_of(&self, runtime: &Runtime) -> Vec<String> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, e)| e.runtime.as_ref() == Some(runtime))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// A container the chain thread saw and the cache did not know.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: String,
    /// The runtime its cgroup names, asked first.
    pub hint: Option<Runtime>,
}

/// Whether a runtime answers, and what has been said about it.
#[derive(Debug)]
struct Health {
    /// `None` until the first call.
    up: Option<bool>,
    retry_at: Instant,
}

/// One runtime's client and its health.
struct Watched {
    client: Arc<dyn RuntimeClient>,
    health: Mutex<Health>,
}

impl Watched {
    /// Whether to call the runtime now: it answers, or it is time to try
    /// again.
    fn usable(&self) -> bool {
        let h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.up != Some(false) || Instant::now() >= h.retry_at
    }

    /// Records an answer. Returns true when the runtime was down before.
    fn answered(&self) -> bool {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let was_down = h.up == Some(false);
        h.up = Some(true);
        if was_down {
            tracing::info!(
                runtime = %self.client.runtime(),
                endpoint = %self.client.endpoint().display(),
                "container runtime answering again; reading its containers"
            );
        }
        was_down
    }

    /// Records a failure: a runtime that is not there is logged once and
    /// left alone for [`RETRY_DOWN`]; a bad answer is logged at debug.
    fn failed(&self, e: &RuntimeError) {
        if !e.is_unavailable() {
            tracing::debug!("{}", with_causes(e));
            return;
        }
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.retry_at = Instant::now() + RETRY_DOWN;
        match h.up {
            Some(false) => {}
            Some(true) => tracing::warn!(
                "{}; its containers get no metadata until it answers (tried again every {} s)",
                with_causes(e),
                RETRY_DOWN.as_secs()
            ),
            None => tracing::info!(
                "{}; its containers get no metadata until it answers (tried again every {} s)",
                with_causes(e),
                RETRY_DOWN.as_secs()
            ),
        }
        h.up = Some(false);
    }
}

/// The cache, the channel its misses are asked on, and the tasks filling it.
pub struct Started {
    pub cache: Arc<MetadataCache>,
    pub requests: mpsc::Sender<Request>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts filling a cache from `runtimes`, on the current tokio runtime.
/// The tasks run until aborted or the runtime shuts down.
pub fn start(runtimes: &Runtimes) -> Started {
    let cache = Arc::new(MetadataCache::default());
    let (tx, rx) = mpsc::channel(1024);
    let watched: Arc<Vec<Watched>> = Arc::new(
        runtimes
            .clients()
            .iter()
            .map(|c| Watched {
                client: c.clone(),
                health: Mutex::new(Health {
                    up: None,
                    retry_at: Instant::now(),
                }),
            })
            .collect(),
    );
    let mut tasks = Vec::new();
    for i in 0..watched.len() {
        let (w, c) = (watched.clone(), cache.clone());
        if watched[i].client.watch().is_some() {
            tasks.push(tokio::spawn(async move { follow(&w[i], &c).await }));
        } else {
            tasks.push(tokio::spawn(async move { poll(&w[i], &c).await }));
        }
    }
    tasks.push(tokio::spawn(serve(watched, cache.clone(), rx)));
    Started {
        cache,
        requests: tx,
        tasks,
    }
}

/// Takes `w`'s listing into the cache (CRI-O, which cannot list: asks
/// about each cached container again).
async fn resync(w: &Watched, cache: &MetadataCache) {
    let rt = w.client.runtime();
    if !w.client.lists() {
        for id in cache.ids_of(&rt) {
            match w.client.inspect(&id).await {
                Ok(Some(_)) => {
                    w.answered();
                }
                Ok(None) => {
                    w.answered();
                    cache.remove(&id);
                }
                Err(e) => {
                    w.failed(&e);
                    return;
                }
            }
        }
        return;
    }
    match w.client.list().await {
        Ok(list) => {
            w.answered();
            cache.replace(&rt, &list);
        }
        Err(e) => w.failed(&e),
    }
}

/// A runtime without an event stream: listed every [`RESYNC`], and probed
/// once at start so that its absence is told at start.
async fn poll(w: &Watched, cache: &MetadataCache) {
    if !w.client.lists() {
        // A probe: an id no runtime uses.
        match w.client.inspect("driftwatch-probe").await {
            Ok(_) => {
                w.answered();
            }
            Err(e) => w.failed(&e),
        }
    }
    loop {
        if w.usable() {
            resync(w, cache).await;
        }
        tokio::time::sleep(RESYNC).await;
    }
}

/// A runtime with an event stream: connected to it whenever the runtime
/// is there, listed each time it (re)connects and every [`RESYNC`].
async fn follow(w: &Watched, cache: &MetadataCache) {
    loop {
        if !w.usable() {
            tokio::time::sleep(RETRY_DOWN.min(Duration::from_secs(5))).await;
            continue;
        }
        let stream = match w.client.watch() {
            Some(f) => f.await,
            None => return,
        };
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                w.failed(&e);
                continue;
            }
        };
        w.answered();
        // Listed after subscribing, so nothing created in between is missed.
        resync(w, cache).await;
        let mut next_resync = tokio::time::Instant::now() + RESYNC;
        loop {
            let change = tokio::select! {
                c = stream.next() => c,
                _ = tokio::time::sleep_until(next_resync) => {
                    resync(w, cache).await;
                    next_resync = tokio::time::Instant::now() + RESYNC;
                    continue;
                }
            };
            match change {
                Some(Ok(Change::Created(id))) => {
                    cache.created(&id);
                    match w.client.inspect(&id).await {
                        Ok(Some(k)) => cache.insert(&k, true),
                        Ok(None) => {}
                        Err(e) => w.failed(&e),
                    }
                }
                Some(Ok(Change::Removed(id))) => cache.remove(&id),
                Some(Ok(Change::Resync)) => resync(w, cache).await,
                Some(Err(e)) => {
                    w.failed(&e);
                    break;
                }
                None => {
                    // The runtime closed the stream (it stopped): a
                    // failure of the kind that is told once.
                    w.failed(&RuntimeError::Unavailable {
                        runtime: w.client.runtime(),
                        endpoint: w.client.endpoint().to_path_buf(),
                        source: "the event stream ended".into(),
                    });
                    break;
                }
            }
        }
    }
}

/// Answers the chain thread's misses, a few at a time.
async fn serve(
    watched: Arc<Vec<Watched>>,
    cache: Arc<MetadataCache>,
    mut rx: mpsc::Receiver<Request>,
) {
    let permits = Arc::new(Semaphore::new(LOOKUPS));
    while let Some(req) = rx.recv().await {
        if cache.get(&req.id).is_some() {
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (watched, cache) = (watched.clone(), cache.clone());
        tokio::spawn(async move {
            lookup(&watched, &cache, &req).await;
            drop(permit);
        });
    }
}

/// Asks each usable runtime, the hinted one first, until one knows the id.
async fn lookup(watched: &[Watched], cache: &MetadataCache, req: &Request) {
    let mut order: Vec<&Watched> = watched.iter().collect();
    if let Some(h) = &req.hint {
        order.sort_by_key(|w| w.client.runtime() != *h);
    }
    for w in order {
        if !w.usable() {
            continue;
        }
        match w.client.inspect(&req.id).await {
            Ok(Some(k)) => {
                w.answered();
                cache.insert(&k, true);
                return;
            }
            Ok(None) => {
                w.answered();
            }
            Err(e) => w.failed(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use std::path::{Path, PathBuf};

    /// A runtime that knows `ids`, or is down.
    struct Fake {
        rt: Runtime,
        ids: Mutex<Vec<String>>,
        down: bool,
        calls: Mutex<usize>,
    }

    impl RuntimeClient for Fake {
        fn runtime(&self) -> Runtime {
            self.rt.clone()
        }
        fn endpoint(&self) -> &Path {
            Path::new("/fake.sock")
        }
        fn list(&self) -> BoxFuture<'_, Result<Vec<KnownContainer>, RuntimeError>> {
            Box::pin(async move {
                *self.calls.lock().unwrap() += 1;
                if self.down {
                    return Err(self.err());
                }
                Ok(self
                    .ids
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|id| self.known(id))
                    .collect())
            })
        }
        fn inspect<'a>(
            &'a self,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Option<KnownContainer>, RuntimeError>> {
            Box::pin(async move {
                *self.calls.lock().unwrap() += 1;
                if self.down {
                    return Err(self.err());
                }
                Ok(self
                    .ids
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|i| *i == id)
                    .map(|id| self.known(id)))
            })
        }
    }

    impl Fake {
        fn new(rt: Runtime, ids: &[&str], down: bool) -> Arc<Fake> {
            Arc::new(Fake {
                rt,
                ids: Mutex::new(ids.iter().map(|s| s.to_string()).collect()),
                down,
                calls: Mutex::new(0),
            })
        }
        fn known(&self, id: &str) -> KnownContainer {
            KnownContainer {
                id: id.into(),
                runtime: Some(self.rt.clone()),
                names: vec![format!("{}-{id}", self.rt)],
                ..KnownContainer::default()
            }
        }
        fn err(&self) -> RuntimeError {
            RuntimeError::Unavailable {
                runtime: self.rt.clone(),
                endpoint: PathBuf::from("/fake.sock"),
                source: "connection refused".into(),
            }
        }
    }

    async fn eventually(what: &str, f: impl Fn() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}");
    }

    #[tokio::test]
    async fn listed_at_start_and_misses_are_looked_up_in_the_background() {
        let docker = Fake::new(Runtime::Docker, &["a"], false);
        let down = Fake::new(Runtime::Containerd, &["b"], true);
        let s = start(&Runtimes::from_clients(vec![docker.clone(), down.clone()]));
        eventually("the listing", || s.cache.get("a").is_some()).await;
        assert_eq!(
            s.cache.get("a").unwrap().container.name.as_deref(),
            Some("docker-a")
        );
        // A container created after the listing: unknown until asked.
        docker.ids.lock().unwrap().push("c".into());
        assert!(s.cache.get("c").is_none());
        s.requests
            .send(Request {
                id: "c".into(),
                hint: None,
            })
            .await
            .unwrap();
        eventually("the lookup", || s.cache.get("c").is_some()).await;
        // The runtime that is down was tried once, then left alone.
        let before = *down.calls.lock().unwrap();
        for id in ["x", "y", "z"] {
            s.requests
                .send(Request {
                    id: id.into(),
                    hint: Some(Runtime::Containerd),
                })
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            *down.calls.lock().unwrap(),
            before,
            "a down runtime costs nothing"
        );
        assert!(s.cache.get("b").is_none());
        for t in s.tasks {
            t.abort();
        }
    }

    #[test]
    fn removed_containers_leave_and_late_answers_do_not_bring_them_back() {
        let cache = MetadataCache::default();
        let k = KnownContainer {
            id: "a".into(),
            runtime: Some(Runtime::Docker),
            ..KnownContainer::default()
        };
        cache.insert(&k, true);
        assert!(cache.get("a").is_some());
        cache.remove("a");
        assert!(cache.get("a").is_none());
        cache.insert(&k, true);
        assert!(cache.get("a").is_none(), "a lookup that raced the removal");
        cache.created("a");
        cache.insert(&k, true);
        assert!(cache.get("a").is_some());
        // A listing replaces its runtime's entries only.
        let p = KnownContainer {
            id: "p".into(),
            runtime: Some(Runtime::Podman),
            ..KnownContainer::default()
        };
        cache.insert(&p, true);
        cache.replace(&Runtime::Docker, &[]);
        assert!(cache.get("a").is_none());
        assert!(cache.get("p").is_some());
    }
}

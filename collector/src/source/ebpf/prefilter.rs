//! The plugins' manifest prefilters, compiled for the kernel: the file
//! records no plugin would be given are dropped before they cost any
//! ring-buffer space (a write under `/tmp` that write-filter excludes).
//!
//! The kernel knows a few facts of a file record for sure: the operation,
//! the file's type, whether it has other hard links, whether the open
//! created it, and which of up to [`KERNEL_PREFIXES`] path prefixes its
//! walked path is under. Each plugin's prefilter is evaluated in three
//! values over those facts (a condition on any other field is unknown);
//! a record is dropped only when, for every plugin that asked for its
//! kind, some condition is certainly false. The result is a bitmap over
//! every combination of the facts (`drop_index`), which the program looks
//! up. What the kernel cannot decide goes to userspace, as before.

use std::sync::{Arc, Mutex};

use aya::maps::{Array, MapData, MapError};
use driftwatch_common::{KERNEL_PREFIXES, KernelPrefix, Op, drop_index};
use driftwatch_sdk::{Condition, EventKind, FileType, KindSet, Manifest};

use super::event_kind;

/// What the loader hands the kernel: the prefixes and the drop bitmap.
#[derive(Clone, PartialEq, Eq)]
pub struct KernelPrefilter {
    /// The prefixes' paths as configured, in kernel slot order.
    pub paths: Vec<String>,
    pub prefixes: [KernelPrefix; KERNEL_PREFIXES],
    /// `drop_index::WORDS` words; empty when nothing is ever dropped.
    pub words: Vec<u64>,
}

impl std::fmt::Debug for KernelPrefilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelPrefilter")
            .field("paths", &self.paths)
            .field("dropped_combinations", &self.dropped())
            .finish()
    }
}

impl KernelPrefilter {
    /// Drops nothing.
    pub fn off() -> KernelPrefilter {
        KernelPrefilter {
            paths: Vec::new(),
            prefixes: [KernelPrefix::EMPTY; KERNEL_PREFIXES],
            words: Vec::new(),
        }
    }

    pub fn is_off(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// How many fact combinations are dropped.
    pub fn dropped(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// Compiles the prefilters of `manifests` (the chain's plugins).
    pub fn compile<'a>(manifests: impl IntoIterator<Item = &'a Manifest>) -> KernelPrefilter {
        let manifests: Vec<&Manifest> = manifests.into_iter().collect();
        let (paths, prefixes) = kernel_prefixes(&manifests);
        KernelPrefilter::compile_over(paths, prefixes, &manifests)
    }

    fn compile_over(
        paths: Vec<String>,
        prefixes: [KernelPrefix; KERNEL_PREFIXES],
        manifests: &[&Manifest],
    ) -> KernelPrefilter {
        let mut words = vec![0u64; drop_index::WORDS as usize];
        for op in Op::ALL {
            let kind = event_kind(op.kind());
            let wanting: Vec<&&Manifest> = manifests
                .iter()
                .filter(|m| m.kinds.contains(&kind))
                .collect();
            if wanting.is_empty() {
                // Not attached at all for this kind; nothing to decide.
                continue;
            }
            for type_class in 0..(1u32 << drop_index::TYPE_BITS) {
                for multi_link in [false, true] {
                    for created in [false, true] {
                        for set in 0..(1u32 << drop_index::PREFIX_BITS) {
                            let facts = Facts {
                                kind,
                                file_type: file_type(type_class),
                                multi_link,
                                created,
                                prefixes: set,
                                paths: &paths,
                            };
                            let dropped = wanting
                                .iter()
                                .all(|m| m.prefilter.iter().any(|c| eval(c, &facts) == Tri::False));
                            if dropped {
                                let i = drop_index::index(
                                    set, type_class, multi_link, created, op as u32,
                                );
                                words[(i / 64) as usize] |= 1 << (i % 64);
                            }
                        }
                    }
                }
            }
        }
        KernelPrefilter {
            paths,
            prefixes,
            words,
        }
    }

    /// Whether a record with these facts is dropped (for tests and logs).
    pub fn drops(
        &self,
        op: Op,
        type_class: u32,
        multi_link: bool,
        created: bool,
        prefixes: u32,
    ) -> bool {
        let i = drop_index::index(prefixes, type_class, multi_link, created, op as u32);
        self.words
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// The prefilter the kernel runs, rewritten on reload: the `KERNEL_DROP`
/// bitmap and the `PREFIXES` it is indexed by.
pub struct LivePrefilter {
    running: KernelPrefilter,
    words: Array<MapData, u64>,
    prefixes: Array<MapData, KernelPrefix>,
}

/// Shared by the sensor and the reloader.
pub type SharedPrefilter = Arc<Mutex<LivePrefilter>>;

impl LivePrefilter {
    /// Takes the kernel's bitmap and prefix table and writes `prefilter`
    /// into them.
    pub fn new(
        words: Array<MapData, u64>,
        prefixes: Array<MapData, KernelPrefix>,
        prefilter: &KernelPrefilter,
    ) -> Result<LivePrefilter, MapError> {
        let mut live = LivePrefilter {
            running: KernelPrefilter::off(),
            words,
            prefixes,
        };
        live.write(prefilter.clone())?;
        Ok(live)
    }

    /// Compiles the prefilters of the chain of `manifests`, its own path
    /// prefixes included, and writes what changed. Returns the prefixes
    /// the new plugins name that the kernel cannot hold (past
    /// [`KERNEL_PREFIXES`], or not a plain absolute path): what is under
    /// them goes to userspace.
    pub fn apply(&mut self, manifests: &[&Manifest]) -> Result<Vec<String>, MapError> {
        let new = KernelPrefilter::compile(manifests.iter().copied());
        let unheld = unheld_prefixes(manifests, &new.paths);
        self.write(new)?;
        Ok(unheld)
    }

    /// The prefixes the kernel holds now, in slot order.
    pub fn paths(&self) -> &[String] {
        &self.running.paths
    }

    /// Writes `new`. Each bit is one fact combination, so while only bits
    /// change a record meets either the old answer or the new one for its
    /// facts. New prefixes change what the bits mean: the bitmap is cleared
    /// first (nothing dropped), then the prefixes and then the new bits are
    /// written, so no record is judged by old bits against new prefixes.
    fn write(&mut self, new: KernelPrefilter) -> Result<(), MapError> {
        let word = |p: &KernelPrefilter, i: usize| p.words.get(i).copied().unwrap_or(0);
        let mut kernel: Vec<u64> = (0..drop_index::WORDS as usize)
            .map(|i| word(&self.running, i))
            .collect();
        if new.prefixes != self.running.prefixes {
            for (i, w) in kernel.iter_mut().enumerate() {
                if *w != 0 {
                    self.words.set(i as u32, 0, 0)?;
                    *w = 0;
                }
            }
            for (i, (p, old)) in new.prefixes.iter().zip(&self.running.prefixes).enumerate() {
                if p != old {
                    self.prefixes.set(i as u32, *p, 0)?;
                }
            }
        }
        for (i, w) in kernel.iter().enumerate() {
            if word(&new, i) != *w {
                self.words.set(i as u32, word(&new, i), 0)?;
            }
        }
        self.running = new;
        Ok(())
    }

    /// Fact combinations dropped now.
    pub fn dropped(&self) -> u32 {
        self.running.dropped()
    }
}

/// The kinds the kernel prefilter can drop records of, for a chain asking
/// for `kinds`: the file kinds (by-path operations it never drops, as it
/// has no exact path for them).
pub fn file_kinds(kinds: KindSet) -> KindSet {
    kinds.difference(KindSet::of(EventKind::Exec))
}

/// The prefixes a pmatch on `fd.name` names in `manifests` that are not
/// among `held`.
fn unheld_prefixes(manifests: &[&Manifest], held: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in manifests {
        for c in &m.prefilter {
            collect_prefixes(c, &mut |p| {
                if !held.iter().any(|h| h == p) && !out.iter().any(|o| o == p) {
                    out.push(p.to_string());
                }
            });
        }
    }
    out
}

/// Every prefix a pmatch on `fd.name` names that the kernel can hold, first
/// come first served, at most [`KERNEL_PREFIXES`]: the paths and their
/// kernel form, slot by slot.
fn kernel_prefixes(manifests: &[&Manifest]) -> (Vec<String>, [KernelPrefix; KERNEL_PREFIXES]) {
    let mut paths: Vec<String> = Vec::new();
    let mut prefixes = [KernelPrefix::EMPTY; KERNEL_PREFIXES];
    for m in manifests {
        for c in &m.prefilter {
            collect_prefixes(c, &mut |p| {
                if paths.len() < KERNEL_PREFIXES
                    && !paths.iter().any(|q| q == p)
                    && let Some(k) = KernelPrefix::from_path(p)
                {
                    prefixes[paths.len()] = k;
                    paths.push(p.to_string());
                }
            });
        }
    }
    (paths, prefixes)
}

fn collect_prefixes(c: &Condition, f: &mut impl FnMut(&str)) {
    match c {
        Condition::Pmatch { field, prefixes } if field == "fd.name" => {
            prefixes.iter().for_each(|p| f(p));
        }
        Condition::Not(inner) => collect_prefixes(inner, f),
        Condition::Any(cs) => cs.iter().for_each(|c| collect_prefixes(c, f)),
        _ => {}
    }
}

fn file_type(class: u32) -> FileType {
    match class {
        1 => FileType::Regular,
        2 => FileType::Directory,
        3 => FileType::Symlink,
        4 => FileType::CharDevice,
        5 => FileType::BlockDevice,
        6 => FileType::Fifo,
        7 => FileType::Socket,
        _ => FileType::Unknown,
    }
}

/// What the kernel knows of a record for sure.
struct Facts<'a> {
    kind: EventKind,
    file_type: FileType,
    multi_link: bool,
    created: bool,
    /// Bit i: under `paths[i]`.
    prefixes: u32,
    paths: &'a [String],
}

/// Three-valued truth: what the facts decide, or not.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    fn of(b: bool) -> Tri {
        if b { Tri::True } else { Tri::False }
    }

    fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Unknown => Tri::Unknown,
        }
    }
}

fn eval(c: &Condition, f: &Facts<'_>) -> Tri {
    match c {
        Condition::Not(inner) => eval(inner, f).not(),
        Condition::Any(cs) => {
            let mut out = Tri::False;
            for c in cs {
                match eval(c, f) {
                    Tri::True => return Tri::True,
                    Tri::Unknown => out = Tri::Unknown,
                    Tri::False => {}
                }
            }
            out
        }
        Condition::In { field, values } => eval_in(field, values, f),
        Condition::Pmatch { field, prefixes } if field == "fd.name" => {
            let mut all_known = true;
            for p in prefixes {
                match f.paths.iter().position(|q| q == p) {
                    Some(i) if f.prefixes & (1 << i) != 0 => return Tri::True,
                    Some(_) => {}
                    None => all_known = false,
                }
            }
            if all_known { Tri::False } else { Tri::Unknown }
        }
        // Every record the kernel judges has a walked file, so these exist.
        Condition::Exists { field } if matches!(field.as_str(), "fd.name" | "fd.typechar") => {
            Tri::True
        }
        _ => Tri::Unknown,
    }
}

fn eval_in(field: &str, values: &[String], f: &Facts<'_>) -> Tri {
    let has = |v: &str| values.iter().any(|x| x == v);
    match field {
        "evt.type" => Tri::of(has(f.kind.as_str())),
        "fd.typechar" => Tri::of(has(f.file_type.typechar_str())),
        "evt.is_open_create" if f.kind == EventKind::OpenWrite => {
            Tri::of(has(if f.created { "true" } else { "false" }))
        }
        "fd.nlink" => {
            // The kernel knows only whether there is more than one link.
            let numeric: Vec<u64> = values.iter().filter_map(|v| v.parse().ok()).collect();
            if f.multi_link {
                if numeric.iter().all(|n| *n <= 1) {
                    Tri::False
                } else {
                    Tri::Unknown
                }
            } else if has("0") && has("1") {
                Tri::True
            } else if !has("0") && !has("1") {
                Tri::False
            } else {
                Tri::Unknown
            }
        }
        _ => Tri::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGULAR: u32 = 1;

    fn manifest(kinds: &[EventKind], prefilter: Vec<Condition>) -> Manifest {
        Manifest::new("p", "1", kinds).with_prefilter(prefilter)
    }

    fn write_filter() -> Manifest {
        let naming = ["rename", "link", "symlink"];
        manifest(
            &[EventKind::OpenWrite, EventKind::Rename],
            vec![
                Condition::in_container(),
                Condition::Any(vec![
                    Condition::is_in("evt.type", naming),
                    Condition::is_in("fd.typechar", ["f"]),
                ]),
                Condition::Any(vec![
                    Condition::is_in("evt.type", naming),
                    Condition::negate(Condition::pmatch("fd.name", ["/tmp", "/var/log"])),
                    Condition::negate(Condition::is_in("fd.nlink", ["0", "1"])),
                ]),
            ],
        )
    }

    #[test]
    fn excluded_writes_are_dropped_and_linked_ones_kept() {
        let k = KernelPrefilter::compile([&write_filter()]);
        assert_eq!(k.paths, ["/tmp", "/var/log"]);
        // Under /tmp (bit 0), a regular file with one link: no plugin wants it.
        assert!(k.drops(Op::Open, REGULAR, false, false, 0b01));
        assert!(k.drops(Op::Open, REGULAR, false, true, 0b10));
        // Elsewhere, or with other links, or not regular (write-filter's own
        // exclusion), as decided.
        assert!(!k.drops(Op::Open, REGULAR, false, false, 0));
        assert!(!k.drops(Op::Open, REGULAR, true, false, 0b01));
        assert!(k.drops(Op::Open, 2, false, false, 0));
        // Renames are named by their target, which the kernel does not test.
        assert!(!k.drops(Op::Rename, 0, false, false, 0b01));
    }

    #[test]
    fn one_plugin_that_may_want_a_record_keeps_it() {
        // exec-bit as shipped: every open_write in a container.
        let exec_bit = manifest(&[EventKind::OpenWrite], vec![Condition::in_container()]);
        let k = KernelPrefilter::compile([&write_filter(), &exec_bit]);
        assert!(!k.drops(Op::Open, REGULAR, false, false, 0b01));
        // Wanting only creations: the rest under /tmp goes.
        let creations = manifest(
            &[EventKind::OpenWrite],
            vec![Condition::Any(vec![
                Condition::is_in("evt.type", ["chmod"]),
                Condition::is_in("evt.is_open_create", ["true"]),
            ])],
        );
        let k = KernelPrefilter::compile([&write_filter(), &creations]);
        assert!(k.drops(Op::Open, REGULAR, false, false, 0b01));
        assert!(!k.drops(Op::Open, REGULAR, false, true, 0b01));
    }

    #[test]
    fn conditions_the_kernel_cannot_decide_drop_nothing() {
        let by_name = manifest(
            &[EventKind::OpenWrite],
            vec![Condition::is_in("proc.name", ["sh"])],
        );
        assert!(KernelPrefilter::compile([&by_name]).is_off());
        // A prefix the kernel cannot hold ("/" or relative): unknown.
        let odd = manifest(
            &[EventKind::OpenWrite],
            vec![Condition::negate(Condition::pmatch(
                "fd.name",
                ["/", "tmp"],
            ))],
        );
        assert!(KernelPrefilter::compile([&odd]).is_off());
        // A positive pmatch is decided both ways when every prefix is known.
        let etc = manifest(
            &[EventKind::OpenWrite],
            vec![Condition::pmatch("fd.name", ["/etc"])],
        );
        let k = KernelPrefilter::compile([&etc]);
        assert!(k.drops(Op::Open, REGULAR, false, false, 0));
        assert!(!k.drops(Op::Open, REGULAR, false, false, 1));
    }

    #[test]
    fn a_reload_compiles_the_new_chains_own_prefixes() {
        let loaded = KernelPrefilter::compile([&write_filter()]);
        // A plugin excluding a prefix the loaded chain never named: the
        // new chain's prefixes are its own, so the kernel drops under it.
        let data = manifest(
            &[EventKind::OpenWrite],
            vec![Condition::negate(Condition::pmatch("fd.name", ["/data"]))],
        );
        let k = KernelPrefilter::compile([&data]);
        assert_eq!(k.paths, ["/data"]);
        assert!(k.prefixes != loaded.prefixes);
        assert!(k.drops(Op::Open, REGULAR, false, false, 0b01));
        assert!(!k.drops(Op::Open, REGULAR, false, false, 0));
        // More prefixes than the kernel holds: the rest are reported.
        let many: Vec<String> = (0..KERNEL_PREFIXES + 2).map(|i| format!("/p{i}")).collect();
        let wide = manifest(
            &[EventKind::OpenWrite],
            vec![Condition::negate(Condition::pmatch(
                "fd.name",
                many.clone(),
            ))],
        );
        let k = KernelPrefilter::compile([&wide]);
        assert_eq!(k.paths.len(), KERNEL_PREFIXES);
        assert_eq!(unheld_prefixes(&[&wide], &k.paths), many[KERNEL_PREFIXES..]);
    }

    #[test]
    fn prefixes_as_a_walk_writes_them() {
        let p = KernelPrefix::from_path("/var/log/").expect("fits");
        assert_eq!(&p.walked[..p.len as usize], b"log\0var\0");
        assert!(KernelPrefix::from_path("/").is_none());
        assert!(KernelPrefix::from_path("/tmp/../etc").is_none());
        assert!(KernelPrefix::from_path("/tmp//x").is_none());
        assert!(KernelPrefix::from_path(&format!("/{}", "a".repeat(64))).is_none());
    }
}

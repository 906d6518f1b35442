//! Least privilege after start. The daemon needs most of root's power only to
//! load and attach its eBPF programs; for the rest of its life it keeps the
//! few capabilities its readers need and drops every other one, from the
//! effective, permitted, inheritable, ambient and bounding sets of every
//! thread.
//!
//! Capabilities belong to each thread, not to the process: `capset(2)` and
//! `PR_CAPBSET_DROP` change only the calling thread. Threads that already run
//! when the daemon drops (the plugin engine's epoch ticker, the compiler's
//! pool) would keep everything, and any one of them is as good as the whole
//! process to an attacker who can write its memory. So the drop is broadcast,
//! the way libcap's psx and Go's `AllThreadsSyscall` do it: a real-time
//! signal whose handler drops the calling thread's capabilities is sent to
//! every thread, and `/proc/self/task` is read back until every thread holds
//! only what is kept. Threads created afterwards inherit the reduced sets.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Bypass of file read and directory search permission checks.
pub const CAP_DAC_READ_SEARCH: u32 = 2;
/// Needed to drop from the bounding set; dropped itself.
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_SYS_MODULE: u32 = 16;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Rounds of signal-and-verify before giving up: each round catches the
/// threads that an unreduced thread created during the previous one.
const ROUNDS: usize = 8;
/// How long one round waits for the signalled threads to answer.
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path}: no {field} line")]
    Parse { path: String, field: &'static str },
    #[error("installing the capability-drop signal handler: {0}")]
    Handler(io::Error),
    #[error("dropping capabilities in thread {tid}: {source}")]
    Drop { tid: i32, source: io::Error },
    #[error(
        "after {ROUNDS} rounds, threads {holdouts:?} still hold capabilities \
         beyond {keep:#x}"
    )]
    Holdouts { keep: u64, holdouts: Vec<i32> },
}

/// What the running daemon keeps, and why (docs/service.md lists the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// Capability bits to keep (bit n = capability n).
    pub mask: u64,
}

impl Keep {
    /// The capabilities the daemon needs after start.
    /// - `CAP_BPF`: hot reload rewrites the kernel's policy maps (the
    ///   prefilter, enforcement), by fd, with `bpf(2)`.
    /// - `CAP_SYS_PTRACE`: `/proc/<pid>/root` and `/proc/<pid>/exe` of other
    ///   processes need ptrace read access (user names from the container's
    ///   `/etc/passwd`, executable hashes, the scan's container roots).
    /// - `CAP_DAC_READ_SEARCH`: hashing container files of other owners with
    ///   modes like 0600. Read and search only, never `CAP_DAC_OVERRIDE`.
    /// - `CAP_SYS_ADMIN`, only while the scan is on: overlayfs keeps
    ///   whiteouts and opaque directories in `trusted.*` xattrs.
    ///
    /// Everything else goes, `CAP_PERFMON` included: the programs are
    /// attached and their links are held by fd.
    pub fn for_daemon(ebpf: bool, scan: bool) -> Keep {
        let mut mask = bit(CAP_SYS_PTRACE) | bit(CAP_DAC_READ_SEARCH);
        if ebpf {
            mask |= bit(CAP_BPF);
        }
        if scan {
            mask |= bit(CAP_SYS_ADMIN);
        }
        Keep { mask }
    }
}

pub const fn bit(cap: u32) -> u64 {
    1u64 << cap
}

/// One thread's capability sets, from `/proc/.../status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCaps {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub bounding: u64,
    pub ambient: u64,
}

impl ThreadCaps {
    /// Parses the `Cap*` lines of a `status` file.
    pub fn parse(status: &str, path: &str) -> Result<ThreadCaps, PrivilegeError> {
        let field = |name: &'static str| -> Result<u64, PrivilegeError> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .ok_or(PrivilegeError::Parse {
                    path: path.to_string(),
                    field: name,
                })
        };
        Ok(ThreadCaps {
            effective: field("CapEff")?,
            permitted: field("CapPrm")?,
            inheritable: field("CapInh")?,
            bounding: field("CapBnd")?,
            // Kernels before 4.3 have no ambient set.
            ambient: field("CapAmb").unwrap_or(0),
        })
    }

    /// Holds nothing beyond `keep` in any set.
    /// The bounding set is only checked with `bounding`: emptying it needs
    /// `CAP_SETPCAP`, which a DaemonSet does not grant (and need not: with
    /// `no_new_privs` set, no exec can gain what the permitted set lost).
    pub fn within(&self, keep: u64, bounding: bool) -> bool {
        let bnd = if bounding { self.bounding } else { 0 };
        (self.effective | self.permitted | self.inheritable | self.ambient | bnd) & !keep == 0
    }
}

/// What a drop did.
#[derive(Debug)]
pub struct Dropped {
    /// The capabilities every thread now holds (effective and permitted).
    pub kept: u64,
    /// Threads reduced by the broadcast, the calling one included.
    pub threads: usize,
    /// Whether the bounding set was emptied too (needs `CAP_SETPCAP`).
    pub bounding: bool,
}

/// Reduces every thread of this process to `keep` (intersected with what it
/// holds). Returns `None` when the process holds no capability at all, as an
/// unprivileged `replay` or test run does: there is nothing to drop.
pub fn drop_all_threads(keep: Keep) -> Result<Option<Dropped>, PrivilegeError> {
    let own = read_caps("/proc/thread-self/status")?;
    if own.permitted == 0 {
        return Ok(None);
    }
    let bounding = own.effective & bit(CAP_SETPCAP) != 0;
    let kept = own.permitted & keep.mask;
    let last = last_cap()?;
    // A process-wide lock: two broadcasts at once would mix their targets.
    static BUSY: AtomicBool = AtomicBool::new(false);
    if BUSY.swap(true, Ordering::AcqRel) {
        return Err(PrivilegeError::Handler(io::Error::other(
            "another capability drop is in progress",
        )));
    }
    let result = broadcast(keep.mask, last, bounding);
    BUSY.store(false, Ordering::Release);
    let threads = result?;
    Ok(Some(Dropped {
        kept,
        threads,
        bounding,
    }))
}

static TARGET: AtomicU64 = AtomicU64::new(0);
static LAST_CAP: AtomicU64 = AtomicU64::new(0);
static BOUNDING: AtomicBool = AtomicBool::new(false);
static ANSWERED: AtomicUsize = AtomicUsize::new(0);
/// The first errno a handler met, 0 if none.
static FAILED: AtomicI32 = AtomicI32::new(0);
static FAILED_TID: AtomicI32 = AtomicI32::new(0);

fn broadcast(keep: u64, last: u32, bounding: bool) -> Result<usize, PrivilegeError> {
    TARGET.store(keep, Ordering::SeqCst);
    BOUNDING.store(bounding, Ordering::SeqCst);
    LAST_CAP.store(u64::from(last), Ordering::SeqCst);
    FAILED.store(0, Ordering::SeqCst);
    let sig = libc::SIGRTMIN() + 4;
    install(sig, on_signal as *const () as libc::sighandler_t)?;
    let outcome = signal_until_reduced(sig, keep, last, bounding);
    // Later stray deliveries of this signal are ignored, not fatal.
    let _ = install(sig, libc::SIG_IGN);
    outcome
}

fn signal_until_reduced(
    sig: libc::c_int,
    keep: u64,
    last: u32,
    bounding: bool,
) -> Result<usize, PrivilegeError> {
    // SAFETY: getpid and gettid have no preconditions.
    let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
    let mut reduced = 0;
    for _ in 0..ROUNDS {
        let holdouts: Vec<i32> = holdouts(keep, bounding)?
            .into_iter()
            .filter(|t| *t != me)
            .collect();
        if holdouts.is_empty() {
            break;
        }
        ANSWERED.store(0, Ordering::SeqCst);
        let mut sent = 0;
        for tid in &holdouts {
            // SAFETY: tgkill with this process's pid only reaches our own
            // threads; ESRCH (the thread exited) is expected and skipped.
            if unsafe { libc::syscall(libc::SYS_tgkill, pid, *tid, sig) } == 0 {
                sent += 1;
            }
        }
        let start = Instant::now();
        while ANSWERED.load(Ordering::SeqCst) < sent && start.elapsed() < ROUND_TIMEOUT {
            std::thread::sleep(Duration::from_millis(1));
        }
        let errno = FAILED.load(Ordering::SeqCst);
        if errno != 0 {
            return Err(PrivilegeError::Drop {
                tid: FAILED_TID.load(Ordering::SeqCst),
                source: io::Error::from_raw_os_error(errno),
            });
        }
        reduced += ANSWERED.load(Ordering::SeqCst);
    }
    apply(keep, last, bounding).map_err(|errno| PrivilegeError::Drop {
        tid: me,
        source: io::Error::from_raw_os_error(errno),
    })?;
    let left = holdouts(keep, bounding)?;
    if !left.is_empty() {
        return Err(PrivilegeError::Holdouts {
            keep,
            holdouts: left,
        });
    }
    Ok(reduced + 1)
}

/// Threads of this process holding anything beyond `keep`.
fn holdouts(keep: u64, bounding: bool) -> Result<Vec<i32>, PrivilegeError> {
    let dir = "/proc/self/task";
    let entries = std::fs::read_dir(dir).map_err(|source| PrivilegeError::Read {
        path: dir.into(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let path = format!("{dir}/{tid}/status");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if !ThreadCaps::parse(&text, &path)?.within(keep, bounding) {
                    out.push(tid);
                }
            }
            // The thread exited between the listing and the read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(PrivilegeError::Read { path, source }),
        }
    }
    Ok(out)
}

fn read_caps(path: &str) -> Result<ThreadCaps, PrivilegeError> {
    let text = std::fs::read_to_string(path).map_err(|source| PrivilegeError::Read {
        path: path.into(),
        source,
    })?;
    ThreadCaps::parse(&text, path)
}

fn last_cap() -> Result<u32, PrivilegeError> {
    let path = "/proc/sys/kernel/cap_last_cap";
    let text = std::fs::read_to_string(path).map_err(|source| PrivilegeError::Read {
        path: path.into(),
        source,
    })?;
    text.trim().parse().map_err(|_| PrivilegeError::Parse {
        path: path.into(),
        field: "cap_last_cap",
    })
}

fn install(sig: libc::c_int, handler: libc::sighandler_t) -> Result<(), PrivilegeError> {
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the
    // handler only makes raw syscalls and touches atomics, which is
    // async-signal-safe.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        // Interrupted reads and waits resume instead of failing with EINTR.
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(sig, &act, std::ptr::null_mut()) != 0 {
            return Err(PrivilegeError::Handler(io::Error::last_os_error()));
        }
    }
    Ok(())
}

extern "C" fn on_signal(_sig: libc::c_int) {
    // SAFETY: errno is thread-local; the interrupted code must see it
    // unchanged.
    let errno = unsafe { *libc::__errno_location() };
    let last = LAST_CAP.load(Ordering::SeqCst) as u32;
    let bounding = BOUNDING.load(Ordering::SeqCst);
    if let Err(e) = apply(TARGET.load(Ordering::SeqCst), last, bounding) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        if FAILED
            .compare_exchange(0, e, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            FAILED_TID.store(tid, Ordering::SeqCst);
        }
    }
    ANSWERED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops the calling thread to `keep`. Raw syscalls only: it runs in a
/// signal handler. Returns the errno of the first failure.
fn apply(keep: u64, last: u32, bounding: bool) -> Result<(), i32> {
    let errno = || {
        // SAFETY: errno is thread-local and always readable.
        unsafe { *libc::__errno_location() }
    };
    // SAFETY: prctl with integer arguments only.
    unsafe {
        // No exec of this process's threads may gain privileges again.
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(errno());
        }
        // Ambient capabilities would survive an exec; old kernels lack them.
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) != 0
            && errno() != libc::EINVAL
        {
            return Err(errno());
        }
        // The bounding set first: dropping from it needs CAP_SETPCAP, which
        // the capset below takes away.
        for cap in 0..=last.min(63) {
            if bounding
                && keep & bit(cap) == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
                && errno() != libc::EINVAL
            {
                return Err(errno());
            }
        }
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and two data structs, as version 3 requires.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(errno());
    }
    for (i, d) in data.iter_mut().enumerate() {
        let keep_half = (keep >> (32 * i)) as u32;
        d.permitted &= keep_half;
        d.effective = d.permitted;
        d.inheritable = 0;
    }
    header.version = LINUX_CAPABILITY_VERSION_3;
    header.pid = 0;
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(errno());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tdriftwatch\nCapInh:\t0000000000000000\n\
        CapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\n\
        CapBnd:\t000001fffeffffff\nCapAmb:\t0000000000000000\n";

    #[test]
    fn parses_status_sets() {
        let caps = ThreadCaps::parse(STATUS, "status").expect("parses");
        assert_eq!(caps.effective, 0x1fffeffffff);
        assert_eq!(caps.bounding, 0x1fffeffffff);
        assert_eq!(caps.ambient, 0);
        assert!(!caps.within(Keep::for_daemon(true, true).mask, false));
        assert!(caps.within(u64::MAX, true));
        let dropped = ThreadCaps {
            effective: 0,
            permitted: 0,
            ..caps
        };
        // A full bounding set is what a drop without CAP_SETPCAP leaves.
        assert!(dropped.within(0, false));
        assert!(!dropped.within(0, true));
    }

    #[test]
    fn a_status_without_caps_is_an_error() {
        let e = ThreadCaps::parse("Name:\tx\n", "/proc/1/status").unwrap_err();
        assert!(e.to_string().contains("CapEff"), "{e}");
    }

    #[test]
    fn the_daemon_keeps_only_its_readers_caps() {
        let k = Keep::for_daemon(true, false).mask;
        assert_eq!(
            k,
            bit(CAP_BPF) | bit(CAP_SYS_PTRACE) | bit(CAP_DAC_READ_SEARCH)
        );
        assert_eq!(k & bit(CAP_SYS_MODULE), 0);
        assert_eq!(k & bit(CAP_SETPCAP), 0);
        assert_eq!(k & bit(CAP_PERFMON), 0);
        assert_ne!(Keep::for_daemon(true, true).mask & bit(CAP_SYS_ADMIN), 0);
        assert_eq!(Keep::for_daemon(false, false).mask & bit(CAP_BPF), 0);
    }
}

//! Who came before an exec: its nearest ancestors (`proc.aname[2]`,
//! `proc.aname[3]`) and the process that last wrote its executable
//! (`drift.writer.*`) and the program file it runs (`drift.file_writer.*`).
//!
//! Both come from what the sensor itself saw, kept in memory: every exec
//! event records its process (comm, parent, executable, command line) in a
//! bounded table, and every write (`open_write`, `truncate` of a known
//! inode) records its writer per (device, inode) in a bounded map. A write
//! only the kernel saw (dropped by the prefilter or a budget) arrives as a
//! writer with the comm alone, completed here from the writer's exec. An
//! ancestor the table does not hold (it started before the sensor, or runs
//! outside the watched scope, like the runtime that starts a container's
//! processes) is read from `/proc/<pid>/stat`, at most once a second per
//! pid; one that is gone is left unknown. Nothing here waits on anything
//! but that small read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use driftwatch_sdk::{Event, EventKind, ExeFile, Writer};

use super::Enricher;

/// Processes remembered at most: the older half is forgotten at once when
/// the newer half fills (an ancestor forgotten this way is read from /proc
/// instead).
const MAX_PROCS: usize = 32_768;
/// Written files remembered at most, forgotten half at a time as
/// processes are: the writers of the last 32 Ki files written are always
/// known.
const MAX_FILES: usize = 65_536;
/// Bytes of a command line kept per process.
const MAX_CMDLINE: usize = 1024;
/// How long a process read from /proc is believed: a pid reused within it
/// by another ancestor would be named by the old one.
const PROC_TTL: Duration = Duration::from_secs(1);
/// Processes read from /proc remembered at most; past that it starts over.
const MAX_READ: usize = 4096;

/// A process read from /proc: its (comm, parent) if it was there, and
/// when it was read.
type ProcRead = (Option<(String, u32)>, Instant);

/// What an exec showed of its process.
struct Seen {
    comm: String,
    ppid: u32,
    exe: String,
    cmdline: String,
    /// When the exec happened.
    time_ns: u64,
    /// The program the process ran before this exec, one level deep: a
    /// shell that writes a file and then execs its last command (as
    /// `sh -c 'a > f && b'` does) wrote the file as the shell.
    earlier: Option<(String, String, u64)>,
}

/// Fills `process.ancestors` and `process.exe_writer` of exec events.
pub struct LineageEnricher {
    proc_root: PathBuf,
    procs: Generations<u32, Seen>,
    writers: Generations<(u64, u64), Writer>,
    /// Processes read from /proc (not in `procs`): what was found, when.
    read: RefCell<HashMap<u32, ProcRead>>,
}

impl Default for LineageEnricher {
    fn default() -> Self {
        LineageEnricher::new()
    }
}

impl LineageEnricher {
    pub fn new() -> LineageEnricher {
        LineageEnricher::with_proc(PathBuf::from("/proc"))
    }

    /// With another procfs mount (tests).
    pub fn with_proc(proc_root: PathBuf) -> LineageEnricher {
        LineageEnricher {
            proc_root,
            procs: Generations::new(MAX_PROCS),
            writers: Generations::new(MAX_FILES),
            read: RefCell::new(HashMap::new()),
        }
    }

    /// `pid`'s comm and parent: from the table, else from /proc, read at
    /// most once per [`PROC_TTL`] per pid. The ancestors outside the table
    /// are the same few host processes (the runtime's conmon or shim, its
    /// parent) for every exec of a container: read each time, they were
    /// over half the daemon's CPU in an exec storm.
    fn lookup(&self, pid: u32) -> Option<(String, u32)> {
        if pid == 0 {
            return None;
        }
        if let Some(s) = self.procs.get(&pid) {
            return Some((s.comm.clone(), s.ppid));
        }
        self.proc_stat(pid)
    }

    /// `pid`'s comm and parent as `/proc/<pid>/stat` has them, read at most
    /// once per [`PROC_TTL`] per pid.
    fn proc_stat(&self, pid: u32) -> Option<(String, u32)> {
        let mut read = self.read.borrow_mut();
        if let Some((found, at)) = read.get(&pid)
            && at.elapsed() < PROC_TTL
        {
            return found.clone();
        }
        let found = std::fs::read_to_string(self.proc_root.join(format!("{pid}/stat")))
            .ok()
            .and_then(|stat| parse_stat(&stat));
        if read.len() >= MAX_READ {
            read.clear();
        }
        read.insert(pid, (found.clone(), Instant::now()));
        found
    }

    /// The comms of the exec'd process's grandparent and great-grandparent
    /// (`ppid`'s parent and its parent).
    fn ancestors(&self, ppid: u32) -> Vec<String> {
        let mut out = Vec::new();
        let mut child = ppid;
        while out.len() < 2 {
            let Some((comm, parent)) = self.parent(child) else {
                break;
            };
            out.push(comm);
            child = parent;
        }
        out
    }

    /// `pid`'s parent, as (comm, pid): the one recorded at its exec or, when
    /// that one has exited since, the one the kernel reparented `pid` to (a
    /// subreaper such as conmon, or init). A runtime's short-lived helper
    /// (`runc exec`) is gone within milliseconds of starting a process.
    fn parent(&self, pid: u32) -> Option<(String, u32)> {
        let (_, recorded) = self.lookup(pid)?;
        if let Some((comm, _)) = self.lookup(recorded) {
            return Some((comm, recorded));
        }
        // Every exec of a process started by `podman exec` or `kubectl
        // exec` asks this of the same parent, whose recorded parent (the
        // runtime's helper) is long gone: read fresh each time, this was
        // most of the daemon's CPU in an exec storm. A reparenting is
        // seen within PROC_TTL.
        let (_, now) = self.proc_stat(pid)?;
        if now == recorded {
            return None;
        }
        self.lookup(now).map(|(comm, _)| (comm, now))
    }

    /// The program and command line `pid` ran at `time_ns`, from the execs
    /// seen: the latest one not after that time.
    fn program_at(&self, pid: u32, time_ns: u64) -> Option<(String, String)> {
        let s = self.procs.get(&pid)?;
        if s.time_ns <= time_ns {
            return Some((s.exe.clone(), s.cmdline.clone()));
        }
        s.earlier
            .as_ref()
            .filter(|(_, _, t)| *t <= time_ns)
            .map(|(exe, cmdline, _)| (exe.clone(), cmdline.clone()))
    }

    /// The writer of `file` into `slot`: from the write records seen, or
    /// the kernel's writer already there completed from its exec.
    fn complete_writer(&self, file: Option<ExeFile>, slot: &mut Option<Writer>) {
        let seen = file.and_then(|f| self.writers.get(&(f.dev, f.ino)).cloned());
        match (seen, slot) {
            // A write record names the writer's program and command line:
            // better than the kernel's comm alone.
            (Some(w), slot) => *slot = Some(w),
            // Only the kernel saw the write (source/ebpf/writers.rs): the
            // writer's own exec, when seen, says the rest.
            (None, Some(w)) if w.exe.is_empty() => {
                if let Some((exe, cmdline)) = self.program_at(w.pid, w.time_ns) {
                    w.exe = exe;
                    w.cmdline = cmdline;
                }
            }
            (None, _) => {}
        }
    }

    /// Who wrote at `time_ns`. The program is the one the writer ran then,
    /// not the one it runs now: exec records and file records travel on
    /// separate rings, so a shell's tail exec (`sh -c 'a > f && b'`) can
    /// be seen before the write it made as the shell.
    fn writer_of(&self, pid: u32, ppid: u32, comm: &str, time_ns: u64) -> Writer {
        match self.program_at(pid, time_ns) {
            Some((exe, cmdline)) => Writer {
                pid,
                exe,
                cmdline,
                time_ns,
            },
            // No exec seen by then: a fork that did not exec (busybox sh
            // runs its applets so) runs its parent's program.
            None => Writer {
                pid,
                exe: self
                    .procs
                    .get(&ppid)
                    .map(|s| s.exe.clone())
                    .unwrap_or_default(),
                cmdline: comm.to_string(),
                time_ns,
            },
        }
    }
}

/// A map of at most `max` entries that forgets its older half at once.
///
/// Every exec adds a process and nothing says when one exits, so the
/// tables fill; starting over when full forgot the live shells and the
/// recent writers with the rest. Two generations keep the newest
/// `max / 2` at least, and swapping them reuses the older one's memory: a
/// table that grew, rehashed and was freed again cost the chain thread
/// page faults on every refill.
struct Generations<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    half: usize,
}

impl<K: Hash + Eq, V> Generations<K, V> {
    fn new(max: usize) -> Self {
        Generations {
            young: HashMap::new(),
            old: HashMap::new(),
            half: (max / 2).max(1),
        }
    }

    fn get(&self, k: &K) -> Option<&V> {
        self.young.get(k).or_else(|| self.old.get(k))
    }

    fn remove(&mut self, k: &K) -> Option<V> {
        self.young.remove(k).or_else(|| self.old.remove(k))
    }

    /// Inserts into the newer half. A key also in the older one is shadowed
    /// there until that half is forgotten.
    fn insert(&mut self, k: K, v: V) {
        if self.young.len() >= self.half && !self.young.contains_key(&k) {
            std::mem::swap(&mut self.young, &mut self.old);
            self.young.clear();
        }
        self.young.insert(k, v);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// (comm, ppid) from `/proc/<pid>/stat`: `pid (comm) state ppid ...`, where
/// comm may itself hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(String, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

impl Enricher for LineageEnricher {
    fn enrich(&mut self, event: &mut Event) {
        match event.kind {
            EventKind::Exec => {
                let p = &mut event.process;
                if p.ancestors.is_empty() {
                    p.ancestors = self.ancestors(p.ppid);
                }
                self.complete_writer(p.exe_file, &mut p.exe_writer);
                if let Some(pf) = p.program_file.as_mut() {
                    self.complete_writer(pf.file, &mut pf.writer);
                }
                let mut cmdline = p.cmdline();
                if cmdline.len() > MAX_CMDLINE {
                    let mut end = MAX_CMDLINE;
                    while !cmdline.is_char_boundary(end) {
                        end -= 1;
                    }
                    cmdline.truncate(end);
                }
                let earlier = self
                    .procs
                    .remove(&p.pid)
                    .map(|s| (s.exe, s.cmdline, s.time_ns));
                self.procs.insert(
                    p.pid,
                    Seen {
                        comm: p.name.clone(),
                        ppid: p.ppid,
                        exe: p.exe_path.clone(),
                        cmdline,
                        time_ns: event.time_ns,
                        earlier,
                    },
                );
            }
            EventKind::OpenWrite | EventKind::Truncate => {
                let Some((dev, ino)) = event.file.as_ref().and_then(|f| f.dev.zip(f.ino)) else {
                    return;
                };
                let p = &event.process;
                let w = self.writer_of(p.pid, p.ppid, &p.name, event.time_ns);
                self.writers.insert((dev, ino), w);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwatch_sdk::{ExeFile, FileInfo, Process};

    fn exec(pid: u32, ppid: u32, comm: &str, exe: &str, file: Option<ExeFile>) -> Event {
        Event {
            kind: EventKind::Exec,
            process: Process {
                pid,
                ppid,
                name: comm.into(),
                exe_path: exe.into(),
                args: vec![comm.into(), "-x".into()],
                exe_file: file,
                ..Process::default()
            },
            ..Event::default()
        }
    }

    /// `pid` (comm `comm`) opening the file (5, 9) for writing at `time_ns`.
    fn write_of_5_9(pid: u32, comm: &str, time_ns: u64) -> Event {
        Event {
            kind: EventKind::OpenWrite,
            time_ns,
            process: Process {
                pid,
                name: comm.into(),
                ..Process::default()
            },
            file: Some(FileInfo {
                dev: Some(5),
                ino: Some(9),
                ..FileInfo::default()
            }),
            ..Event::default()
        }
    }

    #[test]
    fn a_parent_that_exited_is_replaced_by_the_one_adopting() {
        // runc exec (50) started sh (60) and exited; conmon (40) adopted it.
        let dir = tempfile::tempdir().unwrap();
        for (pid, stat) in [
            (60, "60 (sh) S 40 60 60"),
            (40, "40 (conmon) S 1 40 40"),
            (1, "1 (init) S 0 1 1"),
        ] {
            std::fs::create_dir(dir.path().join(pid.to_string())).unwrap();
            std::fs::write(dir.path().join(format!("{pid}/stat")), stat).unwrap();
        }
        let mut e = LineageEnricher::with_proc(dir.path().to_path_buf());
        e.enrich(&mut exec(60, 50, "sh", "/bin/sh", None));
        e.enrich(&mut exec(70, 60, "sh", "/bin/sh", None));
        let mut x = exec(80, 70, "x", "/tmp/x", None);
        e.enrich(&mut x);
        assert_eq!(x.process.ancestors, ["sh", "conmon"]);
    }

    #[test]
    fn ancestors_and_writer_from_what_was_seen() {
        // A procfs with nothing in it: only the table answers.
        let dir = tempfile::tempdir().unwrap();
        let mut e = LineageEnricher::with_proc(dir.path().to_path_buf());
        for ev in [
            &mut exec(10, 1, "sshd", "/usr/sbin/sshd", None),
            &mut exec(20, 10, "bash", "/bin/bash", None),
            &mut exec(30, 20, "cp", "/bin/cp", None),
        ] {
            e.enrich(ev);
        }
        e.enrich(&mut write_of_5_9(30, "cp", 77));
        let file = ExeFile {
            dev: 5,
            ino: 9,
            ..ExeFile::default()
        };
        let mut x = exec(40, 30, "x", "/tmp/x", Some(file));
        e.enrich(&mut x);
        assert_eq!(x.process.ancestors, ["bash", "sshd"]);
        let writer = x.process.exe_writer.expect("writer");
        assert_eq!(
            (writer.pid, writer.exe.as_str(), writer.cmdline.as_str()),
            (30, "/bin/cp", "cp -x")
        );
        assert_eq!(writer.time_ns, 77);
        // Another file: no writer.
        let mut y = exec(41, 30, "y", "/tmp/y", Some(ExeFile::default()));
        e.enrich(&mut y);
        assert!(y.process.exe_writer.is_none());
    }

    #[test]
    fn a_write_seen_after_the_writers_next_exec_names_the_program_then() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = LineageEnricher::with_proc(dir.path().to_path_buf());
        let mut shell = exec(30, 20, "sh", "/bin/sh", None);
        shell.time_ns = 10;
        e.enrich(&mut shell);
        // The shell's tail exec reaches the daemon before the write it made
        // at 20 as the shell, on the other ring.
        let mut tail = exec(30, 20, "sleep", "/bin/sleep", None);
        tail.time_ns = 30;
        e.enrich(&mut tail);
        e.enrich(&mut write_of_5_9(30, "sh", 20));
        let file = ExeFile {
            dev: 5,
            ino: 9,
            ..ExeFile::default()
        };
        let mut x = exec(40, 30, "x", "/tmp/x", Some(file));
        e.enrich(&mut x);
        let writer = x.process.exe_writer.expect("writer");
        assert_eq!(
            (writer.exe.as_str(), writer.cmdline.as_str(), writer.time_ns),
            ("/bin/sh", "sh -x", 20)
        );
    }

    #[test]
    fn a_full_table_forgets_its_older_half_only() {
        let mut g = Generations::new(4);
        for k in 0..4 {
            g.insert(k, k * 10);
        }
        // 0 and 1 were forgotten when 2 and 3 filled the newer half and 4
        // needed room; 2 and 3 survive beside the newest.
        g.insert(4, 40);
        assert_eq!((g.get(&0), g.get(&1)), (None, None));
        assert_eq!(
            (g.get(&2), g.get(&3), g.get(&4)),
            (Some(&20), Some(&30), Some(&40))
        );
        assert_eq!(g.len(), 3);
        // A newer value shadows an older generation's.
        g.insert(2, 21);
        assert_eq!(g.get(&2), Some(&21));
        assert_eq!(g.remove(&2), Some(21));
        assert_eq!(g.remove(&2), Some(20));
        assert_eq!(g.get(&2), None);
        for k in 5..100 {
            g.insert(k, 0);
            assert!(g.len() <= 4, "{}", g.len());
        }
    }

    #[test]
    fn a_writer_only_the_kernel_saw_is_completed_from_its_exec() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = LineageEnricher::with_proc(dir.path().to_path_buf());
        e.enrich(&mut exec(30, 20, "cp", "/bin/cp", None));
        let kernel = |pid| Writer {
            pid,
            exe: String::new(),
            cmdline: "cp".into(),
            time_ns: 5,
        };
        let file = ExeFile {
            dev: 5,
            ino: 9,
            ..ExeFile::default()
        };
        let mut x = exec(40, 30, "x", "/tmp/x", Some(file));
        x.process.exe_writer = Some(kernel(30));
        e.enrich(&mut x);
        let w = x.process.exe_writer.expect("writer");
        assert_eq!(
            (w.exe.as_str(), w.cmdline.as_str(), w.time_ns),
            ("/bin/cp", "cp -x", 5)
        );
        // The writer has exec'd another program since the write: the one
        // it ran then is named.
        let mut again = exec(30, 20, "sh", "/bin/sh", None);
        again.time_ns = 10;
        e.enrich(&mut again);
        let mut z = exec(42, 30, "z", "/tmp/z", Some(file));
        z.process.exe_writer = Some(kernel(30));
        e.enrich(&mut z);
        assert_eq!(z.process.exe_writer.expect("writer").exe, "/bin/cp");
        // A writer whose exec was never seen keeps its comm.
        let mut y = exec(41, 30, "y", "/tmp/y", Some(file));
        y.process.exe_writer = Some(kernel(99));
        e.enrich(&mut y);
        assert_eq!(y.process.exe_writer.expect("writer"), kernel(99));
    }

    #[test]
    fn stat_lines() {
        assert_eq!(
            parse_stat("42 (a (b) c) S 7 42 42 0"),
            Some(("a (b) c".into(), 7))
        );
        assert_eq!(parse_stat("garbage"), None);
    }
}

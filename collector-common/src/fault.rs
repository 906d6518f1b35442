//! Facts the kernel could not read.
//!
//! A failed probe read must not pass for a value ("uid 0", "not on the upper
//! layer"): the program leaves the field zero or empty, sets the fact's bit
//! in `Header::faults` and counts it per CPU in the `FAULTS` map (indexed by
//! `Fault as u32`). Userspace presents a faulted fact as unknown
//! (docs/sensor.md, "Unread facts").

/// One fact a record carries, by what the kernel reads for it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `task->cred`: uid, gid, euid.
    Cred = 0,
    /// `task->thread_pid`: pid namespace level, vpid, pid namespace inode.
    PidNs = 1,
    /// `task->nsproxy->mnt_ns`.
    MntNs = 2,
    /// `task->signal->tty`.
    Tty = 3,
    /// `task->real_parent`: ppid, parent comm, parent exe.
    Parent = 4,
    /// The cgroup directory names.
    Cgroup = 5,
    /// The executable's path (`mm->exe_file`).
    Exe = 6,
    /// Whether a file is on overlayfs and on its upper layer.
    Layer = 7,
    /// The working directory (`fs->pwd`).
    Cwd = 8,
    /// argv (`mm->arg_start..arg_end`, user memory).
    Args = 9,
    /// The path string a syscall was given (user memory).
    Path = 10,
    /// The rename destination string (user memory).
    Target = 11,
    /// The file's own path, or the directory a relative path starts from
    /// (the dentry walk, the fd table).
    File = 12,
    /// The file's inode (`i_mode`) or open mode (`f_mode`).
    Inode = 13,
    /// Reserved: was a syscall's saved registers, which the file hook now
    /// loads directly (a BTF tracepoint's typed pointer: the load cannot
    /// fail, it reads 0). The number stays so older records still decode.
    Syscall = 14,
    /// The executable's inode and filesystem (link count, size, times,
    /// superblock) and the container's root filesystem it is compared with.
    ExeFile = 15,
    /// How many times the task has exec'd since it was forked
    /// (`self_exec_id - parent_exec_id`).
    ExecDepth = 16,
}

impl Fault {
    pub const COUNT: usize = 17;
    pub const ALL: [Fault; Fault::COUNT] = [
        Fault::Cred,
        Fault::PidNs,
        Fault::MntNs,
        Fault::Tty,
        Fault::Parent,
        Fault::Cgroup,
        Fault::Exe,
        Fault::Layer,
        Fault::Cwd,
        Fault::Args,
        Fault::Path,
        Fault::Target,
        Fault::File,
        Fault::Inode,
        Fault::Syscall,
        Fault::ExeFile,
        Fault::ExecDepth,
    ];

    /// This fact's bit in `Header::faults`.
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// Whether `faults` (a `Header::faults` set) has this fact.
    pub const fn is_in(self, faults: u32) -> bool {
        faults & self.bit() != 0
    }

    /// The fact's name in logs.
    pub const fn name(self) -> &'static str {
        match self {
            Fault::Cred => "cred",
            Fault::PidNs => "pid_ns",
            Fault::MntNs => "mnt_ns",
            Fault::Tty => "tty",
            Fault::Parent => "parent",
            Fault::Cgroup => "cgroup",
            Fault::Exe => "exe",
            Fault::Layer => "layer",
            Fault::Cwd => "cwd",
            Fault::Args => "args",
            Fault::Path => "path",
            Fault::Target => "target",
            Fault::File => "file",
            Fault::Inode => "inode",
            Fault::Syscall => "syscall",
            Fault::ExeFile => "exe_file",
            Fault::ExecDepth => "exec_depth",
        }
    }
}

const _: () = {
    let mut i = 0;
    while i < Fault::COUNT {
        assert!(Fault::ALL[i] as usize == i);
        i += 1;
    }
};

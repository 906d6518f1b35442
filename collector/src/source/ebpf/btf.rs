//! Kernel struct offsets from the running kernel's BTF.
//!
//! Rust eBPF programs get no CO-RE relocations, so every offset the
//! programs use is looked up here at start-up and handed to them as a
//! global (`OFFSETS`). Nothing is compiled in: a kernel whose structs moved
//! still works, and a kernel lacking a field fails with its name.

use std::path::{Path, PathBuf};

use btf_rs::{Btf, Struct, Type};
use driftwatch_common::Offsets;

use super::EbpfError;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
/// overlayfs's BTF when it is a module (when built in, its structs are in vmlinux).
pub const OVERLAY_MODULE: &str = "/sys/kernel/btf/overlay";

/// The kernel's type information: vmlinux, plus overlayfs's module BTF when
/// overlayfs is a module.
pub struct KernelBtf {
    vmlinux: Btf,
    overlay: Option<Btf>,
}

/// What the kernel's BTF lacks, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("parsing {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: btf_rs::Error,
    },
    #[error("struct {0} is not in the kernel's BTF")]
    NoStruct(String),
    #[error("struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("{strukt}.{member} is not a struct")]
    NotAStruct { strukt: String, member: String },
    #[error("{strukt}.{member} is a bitfield")]
    Bitfield { strukt: String, member: String },
    #[error("enum {name}")]
    Enum {
        name: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error("enum {name} has no {member}")]
    NoEnumerator { name: String, member: String },
}

impl KernelBtf {
    pub fn load() -> Result<KernelBtf, EbpfError> {
        Self::load_from(Path::new(VMLINUX), Path::new(OVERLAY_MODULE))
    }

    pub fn load_from(vmlinux: &Path, overlay: &Path) -> Result<KernelBtf, EbpfError> {
        if !vmlinux.exists() {
            return Err(EbpfError::NoBtf(vmlinux.to_path_buf()));
        }
        let base = Btf::from_file(vmlinux).map_err(|source| BtfError::Parse {
            path: vmlinux.to_path_buf(),
            source,
        })?;
        let overlay = if overlay.exists() {
            match Btf::from_split_file(overlay, &base) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(
                        "parsing {}: {e}; overlayfs upper-layer facts may be unavailable",
                        overlay.display()
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(KernelBtf {
            vmlinux: base,
            overlay,
        })
    }

    /// The struct named `name` in `btf` (a definition, not a forward declaration).
    fn find_struct(btf: &Btf, name: &str) -> Option<Struct> {
        btf.resolve_types_by_name(name)
            .ok()?
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) => Some(s),
                _ => None,
            })
    }

    fn strukt(&self, name: &str) -> Result<(&Btf, Struct), BtfError> {
        if let Some(s) = Self::find_struct(&self.vmlinux, name) {
            return Ok((&self.vmlinux, s));
        }
        if let Some(b) = &self.overlay
            && let Some(s) = Self::find_struct(b, name)
        {
            return Ok((b, s));
        }
        Err(BtfError::NoStruct(name.to_string()))
    }

    /// Follows typedefs and qualifiers to a struct or union.
    fn as_struct(btf: &Btf, mut t: Type) -> Option<Struct> {
        for _ in 0..16 {
            t = match t {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                Type::Typedef(x) => btf.resolve_chained_type(&x).ok()?,
                Type::Const(x) | Type::Volatile(x) | Type::Restrict(x) => {
                    btf.resolve_chained_type(&x).ok()?
                }
                Type::TypeTag(x) => btf.resolve_chained_type(&x).ok()?,
                _ => return None,
            };
        }
        None
    }

    /// Bit offset of `name` in `s`, looking through anonymous structs and
    /// unions; and the member's type.
    fn member(btf: &Btf, s: &Struct, name: &str) -> Option<(u32, Type)> {
        for m in &s.members {
            let mname = btf.resolve_name(m).unwrap_or_default();
            if mname == name {
                let t = btf.resolve_chained_type(m).ok()?;
                return Some((m.bit_offset(), t));
            }
            if mname.is_empty() {
                let inner = Self::as_struct(btf, btf.resolve_chained_type(m).ok()?)?;
                if let Some((off, t)) = Self::member(btf, &inner, name) {
                    return Some((m.bit_offset() + off, t));
                }
            }
        }
        None
    }

    /// Byte offset of a dotted member path (`ns.inum`) in struct `name`.
    pub fn offset_of(&self, name: &str, path: &str) -> Result<u32, BtfError> {
        let (btf, mut s) = self.strukt(name)?;
        let mut bits = 0u32;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let (off, t) = Self::member(btf, &s, part).ok_or_else(|| BtfError::NoMember {
                strukt: name.to_string(),
                member: path.to_string(),
            })?;
            bits += off;
            if parts.peek().is_some() {
                s = Self::as_struct(btf, t).ok_or_else(|| BtfError::NotAStruct {
                    strukt: name.to_string(),
                    member: part.to_string(),
                })?;
            }
        }
        if !bits.is_multiple_of(8) {
            return Err(BtfError::Bitfield {
                strukt: name.to_string(),
                member: path.to_string(),
            });
        }
        Ok(bits / 8)
    }

    /// The first of `paths` that exists in struct `name` (members renamed
    /// between kernel versions).
    pub fn offset_of_any(&self, name: &str, paths: &[&str]) -> Result<u32, BtfError> {
        let mut last = None;
        for p in paths {
            match self.offset_of(name, p) {
                Ok(o) => return Ok(o),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| BtfError::NoMember {
            strukt: name.to_string(),
            member: paths.join(" or "),
        }))
    }

    pub fn size_of(&self, name: &str) -> Result<u32, BtfError> {
        let (_, s) = self.strukt(name)?;
        Ok(s.size() as u32)
    }

    /// The value of enumerator `member` of `enum name`.
    pub fn enum_value(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let types = self
            .vmlinux
            .resolve_types_by_name(name)
            .map_err(|source| BtfError::Enum {
                name: name.to_string(),
                source,
            })?;
        for t in types {
            if let Type::Enum(e) = t {
                for m in &e.members {
                    if self.vmlinux.resolve_name(m).ok().as_deref() == Some(member) {
                        return Ok(m.val());
                    }
                }
            }
        }
        Err(BtfError::NoEnumerator {
            name: name.to_string(),
            member: member.to_string(),
        })
    }

    /// Everything the programs need. Fails naming the first missing piece,
    /// except overlayfs's inode layout, whose absence only turns the
    /// upper-layer facts off (with a warning).
    pub fn offsets(&self) -> Result<Offsets, BtfError> {
        let o = |s: &str, m: &str| self.offset_of(s, m);
        let ovl_upper_from_inode = match (
            self.offset_of("ovl_inode", "__upperdentry"),
            self.offset_of("ovl_inode", "vfs_inode"),
        ) {
            (Ok(upper), Ok(vfs)) if upper > vfs => upper - vfs,
            _ => {
                tracing::warn!(
                    "struct ovl_inode is not in the kernel's BTF: upper-layer facts are off \
                     (every overlay file reads as lower layer)"
                );
                0
            }
        };
        Ok(Offsets {
            task_real_parent: o("task_struct", "real_parent")?,
            task_tgid: o("task_struct", "tgid")?,
            task_pid: o("task_struct", "pid")?,
            task_comm: o("task_struct", "comm")?,
            task_mm: o("task_struct", "mm")?,
            task_fs: o("task_struct", "fs")?,
            task_files: o("task_struct", "files")?,
            task_cred: o("task_struct", "cred")?,
            task_thread_pid: o("task_struct", "thread_pid")?,
            task_nsproxy: o("task_struct", "nsproxy")?,
            task_signal: o("task_struct", "signal")?,
            task_cgroups: o("task_struct", "cgroups")?,
            task_parent_exec_id: o("task_struct", "parent_exec_id")?,
            task_self_exec_id: o("task_struct", "self_exec_id")?,
            pid_level: o("pid", "level")?,
            pid_numbers: o("pid", "numbers")?,
            upid_size: self.size_of("upid")?,
            upid_nr: o("upid", "nr")?,
            upid_ns: o("upid", "ns")?,
            pid_ns_inum: o("pid_namespace", "ns.inum")?,
            pid_ns_child_reaper: o("pid_namespace", "child_reaper")?,
            nsproxy_mnt_ns: o("nsproxy", "mnt_ns")?,
            mnt_ns_inum: o("mnt_namespace", "ns.inum")?,
            cred_uid: o("cred", "uid.val")?,
            cred_gid: o("cred", "gid.val")?,
            cred_euid: o("cred", "euid.val")?,
            signal_tty: o("signal_struct", "tty")?,
            tty_index: o("tty_struct", "index")?,
            tty_driver: o("tty_struct", "driver")?,
            tty_driver_major: o("tty_driver", "major")?,
            tty_driver_minor_start: o("tty_driver", "minor_start")?,
            mm_exe_file: o("mm_struct", "exe_file")?,
            mm_arg_start: o("mm_struct", "arg_start")?,
            mm_arg_end: o("mm_struct", "arg_end")?,
            fs_root: o("fs_struct", "root")?,
            fs_pwd: o("fs_struct", "pwd")?,
            path_mnt: o("path", "mnt")?,
            path_dentry: o("path", "dentry")?,
            files_fdt: o("files_struct", "fdt")?,
            fdt_max_fds: o("fdtable", "max_fds")?,
            fdt_fd: o("fdtable", "fd")?,
            file_path: o("file", "f_path")?,
            file_inode: o("file", "f_inode")?,
            file_mode: o("file", "f_mode")?,
            dentry_parent: o("dentry", "d_parent")?,
            dentry_name: o("dentry", "d_name")?,
            dentry_inode: o("dentry", "d_inode")?,
            dentry_sb: o("dentry", "d_sb")?,
            qstr_name: o("qstr", "name")?,
            inode_mode: o("inode", "i_mode")?,
            inode_ino: o("inode", "i_ino")?,
            // i_nlink is a union member beside __i_nlink.
            inode_nlink: self.offset_of_any("inode", &["__i_nlink", "i_nlink"])?,
            inode_sb: o("inode", "i_sb")?,
            inode_size: o("inode", "i_size")?,
            // Split into seconds and nanoseconds in 6.7/6.11; a timespec64
            // before.
            inode_mtime_sec: self.offset_of_any(
                "inode",
                &["i_mtime_sec", "__i_mtime.tv_sec", "i_mtime.tv_sec"],
            )?,
            inode_mtime_nsec: self.offset_of_any(
                "inode",
                &["i_mtime_nsec", "__i_mtime.tv_nsec", "i_mtime.tv_nsec"],
            )?,
            inode_ctime_sec: self.offset_of_any(
                "inode",
                &["i_ctime_sec", "__i_ctime.tv_sec", "i_ctime.tv_sec"],
            )?,
            inode_ctime_nsec: self.offset_of_any(
                "inode",
                &["i_ctime_nsec", "__i_ctime.tv_nsec", "i_ctime.tv_nsec"],
            )?,
            sb_magic: o("super_block", "s_magic")?,
            sb_dev: o("super_block", "s_dev")?,
            mount_mnt: o("mount", "mnt")?,
            mount_parent: o("mount", "mnt_parent")?,
            mount_mountpoint: o("mount", "mnt_mountpoint")?,
            mount_mnt_ns: o("mount", "mnt_ns")?,
            vfsmount_root: o("vfsmount", "mnt_root")?,
            vfsmount_sb: o("vfsmount", "mnt_sb")?,
            ovl_upper_from_inode,
            css_set_dfl_cgrp: o("css_set", "dfl_cgrp")?,
            css_set_subsys: o("css_set", "subsys")?,
            memory_cgrp_id: self.enum_value("cgroup_subsys_id", "memory_cgrp_id")?,
            css_cgroup: o("cgroup_subsys_state", "cgroup")?,
            cgroup_kn: o("cgroup", "kn")?,
            kn_name: o("kernfs_node", "name")?,
            // Renamed to __parent in 6.15 (RCU-protected).
            kn_parent: self.offset_of_any("kernfs_node", &["__parent", "parent"])?,
        })
    }
}

impl KernelBtf {
    /// Where the file hook finds a syscall's number and arguments at its
    /// exit: `struct pt_regs` and the task's `thread_info.status`.
    #[cfg(target_arch = "x86_64")]
    pub fn syscall_offsets(&self) -> Result<driftwatch_common::SyscallOffsets, BtfError> {
        let reg = |name: &str| self.offset_of("pt_regs", name);
        let regs = |names: [&str; 6]| -> Result<[u32; 6], BtfError> {
            let mut out = [0; 6];
            for (o, n) in out.iter_mut().zip(names) {
                *o = reg(n)?;
            }
            Ok(out)
        };
        Ok(driftwatch_common::SyscallOffsets {
            nr: reg("orig_ax")?,
            args: regs(["di", "si", "dx", "r10", "r8", "r9"])?,
            compat_args: regs(["bx", "cx", "dx", "si", "di", "bp"])?,
            thread_status: self.offset_of("task_struct", "thread_info.status")?,
            // arch/x86/include/asm/thread_info.h: a #define, not in BTF;
            // tests/sensor.rs checks it with a real int 0x80.
            ts_compat: 0x0002,
        })
    }
}

impl KernelBtf {
    /// Where the io_uring hook finds a submitted request's arguments.
    /// io_uring's own structs are private to it, so a kernel built without
    /// io_uring, or one that renamed them, has none: an error, on which the
    /// loader leaves the hook out and says so.
    pub fn io_uring_offsets(&self) -> Result<driftwatch_common::IoUringOffsets, BtfError> {
        let o = |s: &str, m: &str| self.offset_of(s, m);
        Ok(driftwatch_common::IoUringOffsets {
            opcode: o("io_kiocb", "opcode")?,
            cmd: o("io_kiocb", "cmd")?,
            open_dfd: o("io_open", "dfd")?,
            open_filename: o("io_open", "filename")?,
            open_flags: o("io_open", "how.flags")?,
            open_mode: o("io_open", "how.mode")?,
            rename_old_dfd: o("io_rename", "old_dfd")?,
            rename_oldpath: o("io_rename", "oldpath")?,
            rename_new_dfd: o("io_rename", "new_dfd")?,
            rename_newpath: o("io_rename", "newpath")?,
            unlink_dfd: o("io_unlink", "dfd")?,
            unlink_filename: o("io_unlink", "filename")?,
            link_old_dfd: o("io_link", "old_dfd")?,
            link_oldpath: o("io_link", "oldpath")?,
            link_new_dfd: o("io_link", "new_dfd")?,
            link_newpath: o("io_link", "newpath")?,
            filename_name: o("filename", "name")?,
            _pad: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against this machine's kernel when it has BTF (CI does).
    #[test]
    fn offsets_of_the_running_kernel() {
        let Ok(btf) = KernelBtf::load() else {
            eprintln!("SKIPPED: no kernel BTF at {VMLINUX}");
            return;
        };
        let u = btf
            .io_uring_offsets()
            .expect("io_uring's structs are in BTF");
        // `cmd` shares the request's first bytes with `file`; every
        // operation's struct starts with its `struct file *`.
        assert_eq!(u.cmd, 0);
        assert!(u.open_dfd >= 8 && u.open_filename > u.open_dfd, "{u:?}");
        assert_eq!(u.open_mode, u.open_flags + 8, "open_how: flags, then mode");
        assert_eq!(u.filename_name, 0);
        let o = btf.offsets().expect("every offset resolves");
        // Facts that hold on every kernel this supports.
        assert_eq!(o.path_mnt, 0);
        assert_eq!(o.path_dentry, 8);
        assert_eq!(o.upid_size, 16);
        assert!(o.task_comm > 0 && o.task_real_parent > 0);
        assert!(o.ovl_upper_from_inode > 0, "overlayfs BTF: {o:?}");
        // sizeof(struct inode) is where ovl_inode keeps the upper dentry.
        assert_eq!(o.ovl_upper_from_inode, btf.size_of("inode").unwrap());
        assert!(btf.offset_of("task_struct", "no_such_field").is_err());
        let s = btf.syscall_offsets().expect("pt_regs and thread_info");
        // x86-64's pt_regs: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax.
        assert_eq!(s.nr, 15 * 8);
        assert_eq!(s.args, [14 * 8, 13 * 8, 12 * 8, 7 * 8, 9 * 8, 8 * 8]);
        assert_eq!(
            s.compat_args,
            [5 * 8, 11 * 8, 12 * 8, 13 * 8, 14 * 8, 4 * 8]
        );
        assert!(btf.offset_of("no_such_struct", "x").is_err());
    }
}

//! Paths as the task sees them: a dentry walk climbs `d_parent` and crosses
//! mounts up to the task's root, writing the components leaf first into a
//! `Walk` that userspace reverses and joins.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_probe_read_kernel_str;
use driftwatch_common::{AT_FDCWD, NAME_BOUND, WALK_DATA, WALK_DEPTH, Walk, walk};

use crate::globals::offset;
use crate::read::Reads;
use crate::task::{fd_file, file_path, fs_pwd};

/// Writes the components of (mnt, dentry) into `w`, leaf first, climbing
/// dentries and crossing mounts until the task's root (root_mnt,
/// root_dentry), the top of the mount tree, or `WALK_DEPTH` levels; returns
/// the `walk` status it ended with (`FAULT` when a read failed).
///
/// Not inlined: the loop is verified once, not once per caller.
#[inline(never)]
fn walk_path(
    w: &mut Walk,
    mut mnt: *const u8,
    mut dentry: *const u8,
    root_mnt: *const u8,
    root_dentry: *const u8,
) -> u8 {
    let buf = w.buf.as_mut_ptr();
    let mount_mnt = offset!(mount_mnt);
    let name_off = offset!(dentry_name) + offset!(qstr_name);
    let mut r = Reads::default();
    let mut len: usize = 0;
    let mut mount_at = Walk::NO_MOUNT;
    let mut status = walk::TRUNCATED;
    let mut i = 0;
    // A failed read leaves a null pointer, which ends the walk; the status
    // then says why.
    while i < WALK_DEPTH {
        i += 1;
        if dentry.is_null() || mnt.is_null() {
            status = walk::NONE;
            break;
        }
        if dentry == root_dentry && mnt == root_mnt {
            status = walk::ROOT;
            break;
        }
        let mnt_root = r.kernel_ptr(mnt, offset!(vfsmount_root));
        if dentry == mnt_root {
            // Top of this mount: continue from where it is mounted. `len`
            // only grows, so the minimum is the first crossing.
            mount_at = mount_at.min(len as u16);
            let mount = mnt.wrapping_sub(mount_mnt);
            let mparent = r.kernel_ptr(mount, offset!(mount_parent));
            if mparent == mount || mparent.is_null() {
                status = walk::GLOBAL_ROOT;
                break;
            }
            dentry = r.kernel_ptr(mount, offset!(mount_mountpoint));
            mnt = mparent.wrapping_add(mount_mnt);
            continue;
        }
        let parent = r.kernel_ptr(dentry, offset!(dentry_parent));
        let name = r.kernel_ptr(dentry, name_off);
        if len >= WALK_DATA {
            status = walk::TRUNCATED;
            break;
        }
        // The masks keep the cursor provably inside the buffer.
        let at = len & (WALK_DATA - 1);
        // SAFETY: `at < WALK_DATA`, and `buf` has NAME_BOUND bytes past
        // WALK_DATA, so the helper's write of at most NAME_BOUND bytes stays
        // inside `w.buf`.
        let n = unsafe {
            bpf_probe_read_kernel_str(
                buf.wrapping_add(at).cast::<c_void>(),
                NAME_BOUND as u32,
                name.cast::<c_void>(),
            )
        };
        if n <= 0 {
            status = walk::FAULT;
            break;
        }
        len = at + (n as usize & (2 * NAME_BOUND - 1));
        if parent == dentry || parent.is_null() {
            status = walk::PSEUDO;
            break;
        }
        dentry = parent;
    }
    if r.failed() {
        status = walk::FAULT;
    }
    w.len = len as u16;
    w.mount_at = mount_at;
    w.status = status;
    status
}

/// Walks the `struct path *` `path` up to the task's root `root` (another
/// `struct path *`, null when unknown) into `w`. Nothing to walk for a
/// null `path`; a failed read marks `r`.
#[inline(always)]
pub fn walk_path_struct(r: &mut Reads, w: &mut Walk, path: *const u8, root: *const u8) {
    w.len = 0;
    w.mount_at = Walk::NO_MOUNT;
    w.status = walk::NONE;
    if path.is_null() {
        return;
    }
    let mnt = r.kernel_ptr(path, offset!(path_mnt));
    let dentry = r.kernel_ptr(path, offset!(path_dentry));
    let root_mnt = r.kernel_ptr(root, offset!(path_mnt));
    let root_dentry = r.kernel_ptr(root, offset!(path_dentry));
    if r.failed() {
        w.status = walk::FAULT;
        return;
    }
    if walk_path(w, mnt, dentry, root_mnt, root_dentry) == walk::FAULT {
        r.fail();
    }
}

/// Walks the directory a relative path argument starts from: the dirfd's
/// directory, or the cwd for `AT_FDCWD`. An absolute path (`first` is `/`)
/// needs no base.
#[inline(always)]
pub fn walk_base(
    r: &mut Reads,
    w: &mut Walk,
    task: *const u8,
    dfd: i64,
    first: u8,
    root: *const u8,
) {
    w.len = 0;
    w.mount_at = Walk::NO_MOUNT;
    w.status = walk::NONE;
    if first == b'/' {
        return;
    }
    let dir = if dfd == AT_FDCWD {
        fs_pwd(r, task)
    } else {
        file_path(fd_file(r, task, dfd))
    };
    walk_path_struct(r, w, dir, root);
}

//! Which layer of a container's filesystem a file is on (docs/sensor.md,
//! "Exe and file facts").
//!
//! Overlayfs is read here. A memfd needs no kernel check of its own: its
//! dentry walk ends `PSEUDO` with the name `memfd:…`, which userspace
//! recognizes.

use driftwatch_common::OVERLAYFS_SUPER_MAGIC;

use crate::globals::offset;
use crate::read::Reads;

/// Where a file is, as overlayfs sees it.
#[derive(Clone, Copy, Default)]
pub struct Layer {
    /// On an overlayfs mount.
    pub overlay: bool,
    /// On its upper (writable) layer: created or copied up in the container.
    pub upper: bool,
}

/// The layer of the file `dentry` names. The dentry's superblock must be
/// overlayfs; then its inode is the `vfs_inode` embedded in an `ovl_inode`,
/// and the upper dentry pointer sits `ovl_upper_from_inode` bytes past it:
/// non-null with a live inode means upper.
#[inline(always)]
pub fn layer_of(r: &mut Reads, dentry: *const u8) -> Layer {
    let sb = r.kernel_ptr(dentry, offset!(dentry_sb));
    let magic: u64 = r.kernel(sb, offset!(sb_magic));
    if magic != OVERLAYFS_SUPER_MAGIC {
        return Layer::default();
    }
    // 0: overlayfs's BTF is unavailable and the loader said so.
    let upper_off = offset!(ovl_upper_from_inode);
    let upper = if upper_off == 0 {
        core::ptr::null()
    } else {
        let inode = r.kernel_ptr(dentry, offset!(dentry_inode));
        r.kernel_ptr(inode, upper_off)
    };
    let upper_inode = r.kernel_ptr(upper, offset!(dentry_inode));
    let ino: u64 = r.kernel(upper_inode, offset!(inode_ino));
    Layer {
        overlay: true,
        upper: ino != 0,
    }
}

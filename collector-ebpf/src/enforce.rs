//! The kill decision (docs/enforcement.md): at `sched_process_exec`, once
//! the exec's facts are in its record, the policy userspace wrote into
//! `ACTIVE`/`POLICY`/`PATHS`/`SCOPE` says whether the new program may run.
//! A kill is `bpf_send_signal(SIGKILL)` to the current task: it dies on its
//! way back to user space, before the new program's first instruction.
//!
//! What counts as drift is read from the same facts userspace turns into
//! `exe_source` (`collector/src/source/ebpf/record.rs`), in the same order,
//! so a kill and a finding never disagree on what the file was. Exemptions
//! rest on who the process is (namespaces, the file it ran before), never
//! on names.

use aya_ebpf::helpers::generated::bpf_send_signal;
use driftwatch_common::{
    ExecRecord, FNV_OFFSET, Fault, PATH_MAX_HASHED, PathKey, ScopeKey, Walk, action, exe, fnv,
    list, mode, policy_flag, reason, walk,
};

use crate::maps::{ACTIVE, PATHS, POLICY, SCOPE};

const SIGKILL: u32 = 9;

/// Judges the exec whose facts `r` holds, kills it when the policy says
/// so, and writes the verdict into `r`.
#[inline(always)]
pub fn judge(r: &mut ExecRecord) {
    r.enforce_action = action::NONE;
    r.enforce_reason = reason::NONE;
    r.kill_ret = 0;
    r._pad_enforce = 0;
    let Some(slot) = ACTIVE.get(0).copied() else {
        return;
    };
    let slot = slot & 1;
    let Some(policy) = POLICY.get(slot).copied() else {
        return;
    };
    if policy.mode == mode::OFF {
        return;
    }
    let faults = r.hdr.faults;
    let mnt_ns = r.hdr.mnt_ns;
    // A container: a pid namespace of its own and a mount namespace that is
    // not the host's (the runtime setting a container up is in the host's).
    if Fault::PidNs.is_in(faults)
        || Fault::MntNs.is_in(faults)
        || r.hdr.pid_ns_level == 0
        || mnt_ns == policy.host_mnt_ns
    {
        return;
    }
    let exe_known = !Fault::Exe.is_in(faults)
        && r.exe.status == walk::ROOT
        && policy.flags & policy_flag::EXE_PATHS != 0;
    let mut exe_hash = [0u64; 2];
    if exe_known {
        hash_walk(&r.exe, &mut exe_hash);
    }
    let why = if exe_known
        && (listed(list::DENY, exe_hash[0], slot) || listed(list::DENY_DIR, exe_hash[1], slot))
    {
        reason::DENY
    } else {
        drift_reason(r)
    };
    if why == reason::NONE {
        return;
    }
    let prior_known = r.exe_flags & exe::PRIOR_KNOWN != 0;
    // The very file the task ran before (`/proc/self/exe`): judged at its
    // first exec.
    if prior_known && r.exe_flags & exe::REEXEC != 0 {
        return;
    }
    let prior_foreign = prior_known && r.prior_mnt_ns as u64 != mnt_ns;
    // runc's memfd clone of itself: started from a program outside the
    // container (a real file of another mount namespace, not a memfd).
    if why == reason::MEMFD && prior_foreign && r.prior_mnt_ns != 0 {
        return;
    }
    r.enforce_reason = why;
    let parent_foreign =
        !Fault::Parent.is_in(faults) && r.parent_mnt_ns != 0 && r.parent_mnt_ns as u64 != mnt_ns;
    // The container's init: pid 1, started by the runtime from outside.
    // Without `sched_prepare_exec` (kernels before 6.10) the program it
    // replaced is unknown: pid 1 with a parent outside is then spared, as
    // killing the init stops the container (a later exec by pid 1 itself
    // is spared too there; detection still reports it).
    if r.hdr.vpid == 1
        && parent_foreign
        && (prior_foreign || !prior_known)
        && policy.flags & policy_flag::KILL_INIT == 0
    {
        r.enforce_action = action::INIT;
        return;
    }
    if policy.flags & policy_flag::SCOPED != 0 {
        let key = ScopeKey {
            cgroup_id: r.hdr.cgroup_id,
            slot,
            _pad: 0,
        };
        // SAFETY: the value is copied out at once.
        match unsafe { SCOPE.get(key) }.copied() {
            None => {
                r.enforce_action = action::UNCLASSIFIED;
                return;
            }
            Some(0) => {
                r.enforce_action = action::OUT_OF_SCOPE;
                return;
            }
            Some(_) => {}
        }
    }
    if why != reason::DENY {
        let mut allowed = exe_known
            && (listed(list::ALLOW_PATH, exe_hash[0], slot)
                || listed(list::ALLOW_PATH_DIR, exe_hash[1], slot));
        if !allowed
            && policy.flags & policy_flag::PARENT_PATHS != 0
            && !Fault::Parent.is_in(faults)
            && r.pexe.status == walk::ROOT
        {
            let mut p = [0u64; 2];
            hash_walk(&r.pexe, &mut p);
            allowed = listed(list::ALLOW_PARENT, p[0], slot)
                || listed(list::ALLOW_PARENT_DIR, p[1], slot);
        }
        if allowed {
            r.enforce_action = action::ALLOWED;
            return;
        }
    }
    if policy.mode != mode::ENFORCE {
        r.enforce_action = action::WOULD_KILL;
        return;
    }
    // SAFETY: a helper with no pointer argument; it signals the current
    // task's thread group.
    let ret = unsafe { bpf_send_signal(SIGKILL) };
    r.enforce_action = action::KILLED;
    r.kill_ret = ret as i32;
}

/// Why the executable is drift, from the record's facts, in the order of
/// userspace's `exe_source`: a memfd, a deleted file, the upper layer; then
/// the image (the container's root filesystem) and the host are not, and
/// any other filesystem (a volume, a tmpfs) is. Facts the kernel could not
/// read judge nothing: no kill on a guess.
#[inline(always)]
fn drift_reason(r: &ExecRecord) -> u32 {
    let faults = r.hdr.faults;
    let exe_read = !Fault::Exe.is_in(faults);
    if exe_read && r.exe.status == walk::PSEUDO && is_memfd_name(&r.exe) {
        return reason::MEMFD;
    }
    let file_read = !Fault::ExeFile.is_in(faults);
    if file_read && r.exe_file.nlink == 0 {
        return reason::DRIFT;
    }
    if !Fault::Layer.is_in(faults) && r.exe_flags & exe::UPPER != 0 {
        return reason::DRIFT;
    }
    if !file_read || r.exe_flags & exe::ROOT_FS != 0 || !exe_read {
        return reason::NONE;
    }
    if r.exe.status == walk::ROOT || r.exe.status == walk::TRUNCATED {
        reason::DRIFT
    } else {
        // Outside the container's root (the runtime's own files), or no
        // usable walk.
        reason::NONE
    }
}

/// Whether an anonymous file's name (the walk's one component) starts
/// `memfd:`; byte by byte, as BPF has no `memcmp`.
#[inline(always)]
fn is_memfd_name(w: &Walk) -> bool {
    let b = &w.buf;
    b[0] == b'm' && b[1] == b'e' && b[2] == b'm' && b[3] == b'f' && b[4] == b'd' && b[5] == b':'
}

/// Whether the path hash `hash` is on list `list` of slot `slot`.
#[inline(always)]
fn listed(list: u32, hash: u64, slot: u32) -> bool {
    let key = PathKey { hash, list, slot };
    // SAFETY: only the presence is used.
    unsafe { PATHS.get(key) }.is_some()
}

/// The `PathHash` of a complete walk: `out[0]` the path's, `out[1]` its
/// directory's, taken backwards in one loop. The only branch that depends
/// on the data sets `dir`, which nothing in the loop reads, so the verifier
/// prunes one side at the next iteration instead of forking at every byte.
/// Not inlined: verified once per call site.
#[inline(never)]
fn hash_walk(w: &Walk, out: &mut [u64; 2]) {
    let len = w.len as usize;
    if len > PATH_MAX_HASHED {
        // Too long for any entry (the config refuses such paths): no
        // hash of a listed path is 0 in practice.
        out[0] = 0;
        out[1] = 0;
        return;
    }
    let mut full = FNV_OFFSET;
    let mut dir = FNV_OFFSET;
    let mut k = 0;
    while k < PATH_MAX_HASHED {
        if k >= len {
            break;
        }
        // Through the stack, so LLVM cannot turn the index into a pointer
        // it decrements, whose bounds the verifier loses.
        let at = len - 1 - k;
        // SAFETY: a read of a local.
        let at = unsafe { core::ptr::read_volatile(&at) };
        let Some(b) = w.buf.get(at).copied() else {
            break;
        };
        if b == 0 {
            dir = full;
        }
        full = fnv(full, b);
        k += 1;
    }
    out[0] = full;
    out[1] = dir;
}

//! The host pieces the sensor needs: tracefs (aya reads tracepoint ids
//! there), bpffs, and the syscall tracepoints' record layout.

use std::ffi::CString;
use std::path::Path;

use super::EbpfError;

pub const TRACEFS: &str = "/sys/kernel/tracing";
pub const BPFFS: &str = "/sys/fs/bpf";

/// `FMODE_CREATED` (include/linux/fs.h): a `#define`, so not in BTF. Stable
/// since 4.19; the sensor test checks it on the running kernel (a new file
/// must read as created, an existing one must not).
pub const FMODE_CREATED: u32 = 1 << 20;

fn mount(fstype: &'static str, path: &'static str) -> std::io::Result<()> {
    let src = CString::new(fstype).map_err(std::io::Error::other)?;
    let target = CString::new(path).map_err(std::io::Error::other)?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts tracefs at /sys/kernel/tracing unless it is there.
pub fn mount_tracefs() -> Result<(), EbpfError> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    tracing::info!("mounting tracefs at {TRACEFS}");
    mount("tracefs", TRACEFS).map_err(|source| EbpfError::Mount {
        what: "tracefs",
        path: TRACEFS,
        source,
    })
}

/// Mounts bpffs at /sys/fs/bpf unless it is there. Nothing is pinned today,
/// so a failure is only reported.
pub fn mount_bpffs() {
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .map(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(BPFFS)))
        .unwrap_or(false);
    if mounted {
        return;
    }
    if let Err(e) = mount("bpf", BPFFS) {
        tracing::warn!("mounting bpffs at {BPFFS}: {e}");
    }
}

/// The host's root filesystem as the kernel encodes `s_dev`
/// (`major << 20 | minor`): that of pid 1's root, or of ours when pid 1's
/// cannot be read. 0 (never a device) when neither can.
pub fn host_root_dev() -> u32 {
    use std::os::unix::fs::MetadataExt;
    let dev = match std::fs::metadata("/proc/1/root/").or_else(|_| std::fs::metadata("/")) {
        Ok(m) => m.dev(),
        Err(e) => {
            tracing::warn!("stat of the root directory: {e}");
            return 0;
        }
    };
    (libc::major(dev) << 20) | (libc::minor(dev) & 0xf_ffff)
}

fn format_path(category: &str, name: &str) -> String {
    format!("{TRACEFS}/events/{category}/{name}/format")
}

pub fn check_tracepoint(category: &str, name: &str) -> Result<String, EbpfError> {
    std::fs::read_to_string(format_path(category, name))
        .map_err(|_| EbpfError::MissingTracepoint(format!("{category}:{name}")))
}

/// The `offset:` of field `field` in a tracepoint format description.
pub fn field_offset(format: &str, field: &str) -> Option<u32> {
    for line in format.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let decl = parts.next()?.trim();
        let fname = decl.rsplit([' ', '*']).next()?;
        if fname != field {
            continue;
        }
        for p in parts {
            if let Some(v) = p.trim().strip_prefix("offset:") {
                return v.trim().parse().ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAT: &str = "name: sys_enter_openat
ID: 664
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:umode_t mode;\toffset:40;\tsize:8;\tsigned:0;
";

    #[test]
    fn format_fields_are_found() {
        assert_eq!(field_offset(OPENAT, "__syscall_nr"), Some(8));
        assert_eq!(field_offset(OPENAT, "filename"), Some(24));
        assert_eq!(field_offset(OPENAT, "mode"), Some(40));
        assert_eq!(field_offset(OPENAT, "common_pid"), Some(4));
        assert_eq!(field_offset(OPENAT, "nope"), None);
    }
}

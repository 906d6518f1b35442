//! Who wrote an executed file, from the kernel's `WRITERS` map.
//!
//! The lineage enricher names an exec's writer from the write records it
//! saw. The kernel prefilter drops writes no plugin wants (under `/tmp`,
//! by default) and a flooding container's budget drops the rest, so a
//! binary dropped in `/tmp` and run would name nobody. The file hook
//! therefore records every regular file's last writer in `WRITERS` before
//! anything is dropped, and execs of files not from the image read it here.

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData};
use driftwatch_common::{InodeKey, LastWriter};
use driftwatch_sdk::{Event, EventKind, Writer};

use super::record::{Clock, cstr, kernel_dev};

/// Fills `exe_writer` of the exec events in `batch` whose file is not
/// plainly from the image's lower layers and has none yet.
pub fn fill(bpf: &Ebpf, clock: &Clock, batch: &mut [Event]) {
    let wanted = |e: &Event| {
        e.kind == EventKind::Exec
            && e.process.exe_writer.is_none()
            && !e.process.exe_lower_layer
            && e.process.exe_file.is_some()
    };
    if !batch.iter().any(wanted) {
        return;
    }
    let Some(map) = bpf
        .map("WRITERS")
        .and_then(|m| BpfHashMap::<&MapData, InodeKey, LastWriter>::try_from(m).ok())
    else {
        return;
    };
    for ev in batch.iter_mut().filter(|e| wanted(e)) {
        let Some(f) = ev.process.exe_file else {
            continue;
        };
        let key = InodeKey {
            dev: kernel_dev(f.dev),
            _pad: 0,
            ino: f.ino,
        };
        if let Ok(w) = map.get(&key, 0) {
            ev.process.exe_writer = Some(Writer {
                pid: w.tgid,
                // The lineage enricher fills these from the writer's exec
                // when it saw one; the kernel knows only the comm.
                exe: String::new(),
                cmdline: cstr(&w.comm),
                time_ns: clock.wall(w.ktime_ns),
            });
        }
    }
}

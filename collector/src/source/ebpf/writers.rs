//! Who wrote an executed file, from the kernel's `WRITERS` map.
//!
//! The lineage enricher names an exec's writer from the write records it
//! saw. The kernel prefilter drops writes no plugin wants (under `/tmp`,
//! by default) and a flooding container's budget drops the rest, so a
//! binary dropped in `/tmp` and run would name nobody. The file hook
//! therefore records every regular file's last writer in `WRITERS` before
//! anything is dropped, and [`KernelWriters`] reads it for execs of files
//! not from the image: the executable, and the program file it runs (a
//! script, the loader's file), whose inode the collector learns only after
//! the program-file enricher has judged it. That is why this is an enricher
//! on the chain's thread and not a step of the ring-buffer reader.

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData};
use driftwatch_common::{InodeKey, LastWriter};
use driftwatch_sdk::{Event, EventKind, ExeFile, Writer};

use super::EbpfError;
use super::record::{Clock, cstr, kernel_dev};
use crate::enrich::Enricher;

/// The kernel's last-writer map, read by (device, inode).
pub struct KernelWriters {
    map: BpfHashMap<MapData, InodeKey, LastWriter>,
    clock: Clock,
}

impl KernelWriters {
    /// Takes `WRITERS` out of the loaded object.
    pub fn take(bpf: &mut Ebpf, clock: Clock) -> Result<KernelWriters, EbpfError> {
        Ok(KernelWriters {
            map: super::take_map(bpf, "WRITERS")?,
            clock,
        })
    }

    /// The last writer of `file`, as the kernel recorded it: its pid, comm
    /// and time. The lineage enricher fills in its executable and command
    /// line from the writer's exec when it saw one.
    fn writer_of(&self, file: ExeFile) -> Option<Writer> {
        let key = InodeKey {
            dev: kernel_dev(file.dev),
            _pad: 0,
            ino: file.ino,
        };
        let w = self.map.get(&key, 0).ok()?;
        Some(Writer {
            pid: w.tgid,
            exe: String::new(),
            cmdline: cstr(&w.comm),
            time_ns: self.clock.wall(w.ktime_ns),
        })
    }
}

impl Enricher for KernelWriters {
    fn enrich(&mut self, ev: &mut Event) {
        if ev.kind != EventKind::Exec {
            return;
        }
        let p = &mut ev.process;
        if p.exe_writer.is_none()
            && !p.exe_lower_layer
            && let Some(f) = p.exe_file
        {
            p.exe_writer = self.writer_of(f);
        }
        if let Some(pf) = p.program_file.as_mut()
            && pf.writer.is_none()
            && pf.source.is_some_and(|s| s.is_drift())
            && let Some(f) = pf.file
        {
            pf.writer = self.writer_of(f);
        }
    }
}

//! Repeats the kernel folded (`AGG`, `aggregate_window_ms`), reported.
//!
//! The file hook sends the first write of a (container, process, file,
//! operation) and counts the repeats within the window in `AGG` instead of
//! sending them, before walking the path: a container that rewrites one
//! file in a loop costs one record per window, not one per write. A repeat
//! by another name than the sent record's (the file renamed meanwhile) is
//! sent, and reopens the window. The count there only ever grows,
//! so reporting its difference never counts a repeat twice, and nothing in
//! the kernel is reset from here (a reset could race with a repeat and lose
//! it).
//!
//! Every second, [`Folds::sweep`] reads the map and, for each key whose
//! window has closed with repeats not yet reported, emits the event that
//! reported the key last again, with `repeat` saying how many more times it
//! happened and between which times. That event went through the chain when
//! it was first sent, so the repeats make the same findings, once, with
//! `evt.count`. A key the kernel evicted (the map is an LRU of 8 Ki keys)
//! takes its unreported repeats with it; a key whose first event is not
//! remembered here (more than [`MAX_SEEN`] keys at once) is reported with
//! the process and file facts the key holds and no path.
//!
//! A key whose window closed a whole window ago, with every repeat
//! reported, is deleted: otherwise every file a container ever wrote stays
//! in the map until evicted, and reading a full map costs the daemon about
//! 3 % of a core each second, forever (bench figures in the commit that
//! added this). The kernel only counts into an open window, so a closed
//! one has nothing more to count; the key is read again just before the
//! delete and kept if the kernel reopened its window meanwhile, which
//! leaves the race to the microseconds between that read and the delete
//! (a write then is sent, and only that window's repeat count is lost).

use std::collections::HashMap;

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData};
use driftwatch_common::{AggKey, AggWindow, Op};
use driftwatch_sdk::{Event, EventKind, FileInfo, Repeat};

use super::EbpfError;
use super::record::{Clock, kernel_dev};

/// Keys whose reporting event is remembered at most; past that new keys are
/// reported without their first event's facts.
const MAX_SEEN: usize = 16_384;

/// What is known of one folded key.
struct Seen {
    /// The event that reported the key last (the first one sent, then each
    /// report of repeats).
    event: Event,
    /// The kernel's repeat count already reported.
    reported: u64,
}

pub struct Folds {
    map: BpfHashMap<MapData, AggKey, AggWindow>,
    window_ns: u64,
    clock: Clock,
    seen: HashMap<AggKey, Seen>,
}

impl Folds {
    /// Takes `AGG` out of the loaded object; `None` when folding is off.
    pub fn take(bpf: &mut Ebpf, window_ns: u64, clock: Clock) -> Result<Option<Folds>, EbpfError> {
        let map: BpfHashMap<_, _, _> = super::take_map(bpf, "AGG")?;
        if window_ns == 0 {
            return Ok(None);
        }
        Ok(Some(Folds {
            map,
            window_ns,
            clock,
            seen: HashMap::new(),
        }))
    }

    /// Remembers `ev` as the event that reports its key, when it is one the
    /// kernel folds.
    pub fn note(&mut self, ev: &Event) {
        if ev.repeat.is_some() {
            return;
        }
        let Some(key) = key_of(ev) else {
            return;
        };
        let room = self.seen.len() < MAX_SEEN;
        match self.seen.get_mut(&key) {
            Some(s) => s.event = ev.clone(),
            None if room => {
                self.seen.insert(
                    key,
                    Seen {
                        event: ev.clone(),
                        reported: 0,
                    },
                );
            }
            None => {}
        }
    }

    /// Appends to `out` an event for each key whose window closed with
    /// repeats not yet reported, and deletes the keys closed a window ago
    /// and reported. `now_ktime` is the kernel's clock (`CLOCK_MONOTONIC`).
    /// Returns how many keys the map holds after.
    pub fn sweep(&mut self, now_ktime: u64, out: &mut Vec<Event>) -> usize {
        let mut live: Vec<(AggKey, AggWindow)> = Vec::new();
        let mut stale: Vec<(AggKey, AggWindow)> = Vec::new();
        for entry in self.map.iter() {
            match entry {
                Ok(kv) => live.push(kv),
                // The key was evicted while the map was walked.
                Err(_) => continue,
            }
        }
        // Forget keys the kernel no longer holds.
        if self.seen.len() > live.len() {
            let held: std::collections::HashSet<AggKey> = live.iter().map(|(k, _)| *k).collect();
            self.seen.retain(|k, _| held.contains(k));
        }
        let mut held = live.len();
        for (key, w) in live {
            let closed_for = now_ktime.saturating_sub(w.first_ns);
            if closed_for < self.window_ns {
                continue;
            }
            let reported = self.seen.get(&key).map_or(0, |s| s.reported);
            if w.repeats <= reported {
                if closed_for >= 2 * self.window_ns {
                    stale.push((key, w));
                }
                continue;
            }
            let last_ns = self.clock.wall(w.last_ns);
            let mut ev = match self.seen.get(&key) {
                Some(s) => s.event.clone(),
                None => bare_event(&key),
            };
            let first_ns = ev.time_ns;
            ev.time_ns = last_ns;
            ev.repeat = Some(Repeat {
                count: w.repeats - reported,
                first_ns,
                last_ns,
            });
            let room = self.seen.len() < MAX_SEEN;
            match self.seen.get_mut(&key) {
                Some(s) => {
                    s.reported = w.repeats;
                    s.event.time_ns = last_ns;
                    s.event.repeat = None;
                }
                None if room => {
                    let mut event = ev.clone();
                    event.repeat = None;
                    self.seen.insert(
                        key,
                        Seen {
                            event,
                            reported: w.repeats,
                        },
                    );
                }
                None => {}
            }
            out.push(ev);
        }
        for (key, was) in stale {
            // Kept when the kernel reopened the window (or counted into it)
            // since the walk above; gone already when it evicted the key.
            match self.map.get(&key, 0) {
                Ok(now) if now.first_ns == was.first_ns && now.repeats == was.repeats => {}
                _ => continue,
            }
            if self.map.remove(&key).is_ok() {
                self.seen.remove(&key);
                held -= 1;
            }
        }
        held
    }
}

/// The kernel's key of an event it may fold: a write open that created
/// nothing, or a truncate, of a file with one name (the file hook's rule).
fn key_of(ev: &Event) -> Option<AggKey> {
    let f = ev.file.as_ref()?;
    let op = match ev.kind {
        EventKind::OpenWrite if !f.created => Op::Open,
        EventKind::Truncate => Op::Truncate,
        _ => return None,
    };
    if f.nlink.is_some_and(|n| n > 1) {
        return None;
    }
    Some(AggKey {
        cgroup_id: ev.process.cgroup_id,
        ino: f.ino?,
        dev: kernel_dev(f.dev?),
        tgid: ev.process.pid,
        op: op as u32,
        _pad: 0,
    })
}

/// An event from the key alone, when the one that reported it is not
/// remembered: the process and the file's device and inode, no path.
fn bare_event(key: &AggKey) -> Event {
    let mut ev = Event {
        kind: match Op::from_raw(key.op) {
            Some(Op::Truncate) => EventKind::Truncate,
            _ => EventKind::OpenWrite,
        },
        file: Some(FileInfo {
            dev: Some(super::record::user_dev(key.dev)),
            ino: Some(key.ino),
            ..FileInfo::default()
        }),
        ..Event::default()
    };
    ev.process.pid = key.tgid;
    ev.process.cgroup_id = key.cgroup_id;
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(created: bool, nlink: u32) -> Event {
        let mut ev = Event {
            kind: EventKind::OpenWrite,
            file: Some(FileInfo {
                path: "/etc/x".into(),
                created,
                dev: Some(libc::makedev(0, 52)),
                ino: Some(7),
                nlink: Some(nlink),
                ..FileInfo::default()
            }),
            ..Event::default()
        };
        ev.process.pid = 42;
        ev.process.cgroup_id = 9;
        ev
    }

    #[test]
    fn the_key_is_the_kernel_s() {
        let k = key_of(&write(false, 1)).expect("foldable");
        assert_eq!((k.cgroup_id, k.ino, k.dev, k.tgid), (9, 7, 52, 42));
        assert_eq!(k.op, Op::Open as u32);
        // A creation, or a file with other names, is never folded.
        assert!(key_of(&write(true, 1)).is_none());
        assert!(key_of(&write(false, 2)).is_none());
        let mut chmod = write(false, 1);
        chmod.kind = EventKind::Chmod;
        assert!(key_of(&chmod).is_none());
    }
}

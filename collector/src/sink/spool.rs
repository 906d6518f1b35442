//! A bounded on-disk queue between the outputs and a remote exporter.
//!
//! Records are appended to numbered segment files and leave only when the
//! exporter acknowledges them, so a backend outage or a `kill -9` loses
//! nothing: after a restart the exporter resumes from the last
//! acknowledged record (at-least-once). Each record is framed as
//! `len: u32 LE, crc32: u32 LE, bytes`; a torn record at the tail (the
//! process died mid-write) fails its check and is cut off at open.
//!
//! The `cursor` file holds two positions: everything before `acked` was
//! delivered; records between `acked` and `inflight` were being exported
//! when the process last stopped, so re-sending them may duplicate. They
//! are counted as such.
//!
//! Writes go to the page cache, which survives the process; segments are
//! fsynced when they are closed, so a power loss can lose at most the
//! unsynced tail of the open segment. The cursor is 36 bytes overwritten
//! in place with one `pwrite` per update (two per exported batch; the
//! earlier create-and-rename cost more CPU than reading the batch back).
//! A write that small cannot be torn by a killed process; a power loss
//! that tears it fails its checksum, and the spool is then sent again from
//! its oldest record. It is not fsynced: losing an update to it can only
//! cause re-delivery.
//!
//! One process at a time: each keeps its own head length and cursor, so a
//! second daemon (or `verify-digests --export` with the daemon's config)
//! would cut the other's appends as torn tails and acknowledge records it
//! never sent. `open` takes an exclusive `flock` on `lock` in the directory
//! for the spool's lifetime, and a second opener is refused, told who
//! holds it. A failed write (ENOSPC, EIO) may leave part of a frame; it is
//! cut off at once, so what is appended later stays framed and nothing
//! spooled before is lost.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const HEADER: u64 = 8;
/// A record larger than this is corruption, not data.
const MAX_RECORD: u32 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "spool {path} is not private to the daemon (mode {mode:o}); findings in it could be read or forged"
    )]
    Insecure { path: PathBuf, mode: u32 },
    #[error(
        "spool {path} is in use by another process ({holder}); two processes on one spool lose findings: give each its own spool dir"
    )]
    Locked { path: PathBuf, holder: String },
    #[error(
        "spool {path} is owned by uid {owner}, not by the daemon's uid {euid}; its owner could plant or remove findings"
    )]
    NotOwned {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
}

/// A position in the spool: segment number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

/// What opening an existing spool found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Records waiting for export.
    pub pending: u64,
    /// Of those, records that were in flight when the process stopped and
    /// may have reached the backend already.
    pub maybe_delivered: u64,
    /// Bytes cut off a torn tail.
    pub truncated_bytes: u64,
    /// Corrupt bytes inside segments that were skipped to reach the next
    /// valid record (the records after them are kept).
    pub skipped_bytes: u64,
    /// The cursor did not read back (a power loss tore it): every pending
    /// record is sent again and counted as possibly delivered.
    pub cursor_lost: bool,
}

/// A batch read from the head of the spool.
pub struct Batch {
    pub records: Vec<Vec<u8>>,
    /// Acknowledging this position removes the batch.
    pub end: Pos,
}

impl Batch {
    /// What the batch takes in the spool, framing included: the measure
    /// of `peek`'s byte budget.
    pub fn spooled_bytes(&self) -> u64 {
        self.records.iter().map(|r| HEADER + r.len() as u64).sum()
    }
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Holds the directory's `flock` until the spool is dropped.
    _lock: File,
}

struct State {
    acked: Pos,
    inflight: Pos,
    /// Segment being appended to, and its length.
    head: u64,
    head_len: u64,
    writer: File,
    /// A failed write left bytes that could not be cut off: the next append
    /// starts a new segment (the old one's torn tail is skipped by `peek`).
    roll_next: bool,
    pending_records: u64,
    /// Bytes on disk not yet acknowledged (including framing).
    pending_bytes: u64,
    /// Bytes in `rejected.jsonl` and its rotated copy: part of `max_bytes`,
    /// so that what the spool may take on disk is one number.
    rejected_bytes: u64,
    cursor: CursorFile,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, Recovered), SpoolError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let meta = std::fs::metadata(dir).map_err(io(dir))?;
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != euid {
            return Err(SpoolError::NotOwned {
                path: dir.to_path_buf(),
                owner: meta.uid(),
                euid,
            });
        }
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(SpoolError::Insecure {
                path: dir.to_path_buf(),
                mode: mode & 0o777,
            });
        }
        let lock = take_lock(dir)?;
        let mut segments = list_segments(dir)?;
        let (mut cursor, saved) = CursorFile::open(dir)?;
        let cursor_lost = saved.is_none();
        let (mut acked, mut inflight) = saved.unwrap_or_default();
        // A cursor from before a segment was removed (or no cursor) starts
        // at the oldest segment still there.
        if let Some(first) = segments.first()
            && acked.segment < *first
        {
            acked = Pos {
                segment: *first,
                offset: 0,
            };
        }
        inflight = inflight.max(acked);

        let mut rec = Recovered::default();
        let mut pending_bytes = 0;
        for &seg in &segments {
            if seg < acked.segment {
                continue;
            }
            let path = segment_path(dir, seg);
            let start = if seg == acked.segment {
                acked.offset
            } else {
                0
            };
            let (good_len, offsets, skipped) = scan(&path, start)?;
            rec.skipped_bytes += skipped;
            let file_len = std::fs::metadata(&path).map_err(io(&path))?.len();
            if good_len < file_len {
                // Torn tail: cut it off so appends continue from a record boundary.
                rec.truncated_bytes += file_len - good_len;
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(good_len))
                    .map_err(io(&path))?;
            }
            for off in &offsets {
                rec.pending += 1;
                if (Pos {
                    segment: seg,
                    offset: *off,
                }) < inflight
                {
                    rec.maybe_delivered += 1;
                }
            }
            pending_bytes += good_len - start.min(good_len);
        }
        if cursor_lost {
            rec.cursor_lost = true;
            rec.maybe_delivered = rec.pending;
        }
        // Segments wholly acknowledged but not yet removed.
        for &seg in segments.iter().filter(|s| **s < acked.segment) {
            let _ = std::fs::remove_file(segment_path(dir, seg));
        }
        segments.retain(|s| *s >= acked.segment);

        let head = segments.last().copied().unwrap_or(acked.segment.max(1));
        if acked.segment == 0 {
            acked.segment = head;
        }
        let path = segment_path(dir, head);
        let writer = open_append(&path)?;
        let head_len = writer.metadata().map_err(io(&path))?.len();
        if cursor_lost {
            inflight = Pos {
                segment: head,
                offset: head_len,
            };
        }
        // Also rewrites a cursor left in an earlier version's format.
        cursor.write(acked, inflight.max(acked))?;
        // The cursor and head segment may be new names in the directory.
        sync_dir(dir)?;
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 16).clamp(64 << 10, 16 << 20),
            state: Mutex::new(State {
                acked,
                inflight: acked,
                head,
                head_len,
                writer,
                roll_next: false,
                pending_records: rec.pending,
                pending_bytes,
                rejected_bytes: rejected_on_disk(dir),
                cursor,
            }),
            _lock: lock,
        };
        Ok((spool, rec))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends records in order until the spool is full; returns how many
    /// were kept (the rest were refused and are the caller's to count).
    pub fn append<'a>(
        &self,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<usize, SpoolError> {
        let mut st = self.lock();
        let mut buf = Vec::new();
        let mut kept = 0;
        for r in records {
            let framed = HEADER + r.len() as u64;
            if st.pending_bytes + st.rejected_bytes + buf.len() as u64 + framed > self.max_bytes {
                break;
            }
            buf.extend_from_slice(&(r.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(r).to_le_bytes());
            buf.extend_from_slice(r);
            kept += 1;
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if st.head_len >= self.segment_bytes || st.roll_next {
            self.roll(&mut st)?;
            st.roll_next = false;
        }
        let path = segment_path(&self.dir, st.head);
        if let Err(e) = st.writer.write_all(&buf) {
            // Part of the batch may be on disk: cut it off, or records
            // appended later would follow a torn frame and be skipped with
            // it. Truncating needs no space, so it works on a full disk.
            let head_len = st.head_len;
            if let Err(cut) = st.writer.set_len(head_len) {
                tracing::error!(segment = %path.display(), "cannot cut a torn write ({cut}); starting a new segment");
                st.roll_next = true;
            }
            return Err(io(&path)(e));
        }
        st.head_len += buf.len() as u64;
        st.pending_bytes += buf.len() as u64;
        st.pending_records += kept as u64;
        Ok(kept)
    }

    /// Closes the head segment durably and starts the next one.
    fn roll(&self, st: &mut State) -> Result<(), SpoolError> {
        let path = segment_path(&self.dir, st.head);
        st.writer.sync_data().map_err(io(&path))?;
        st.head += 1;
        let next = segment_path(&self.dir, st.head);
        st.writer = open_append(&next)?;
        st.head_len = 0;
        // The new segment's name must survive a power loss as well as its
        // records: records synced into a file whose directory entry was
        // never written are lost with it.
        sync_dir(&self.dir)
    }

    /// Up to `max` records from the oldest unacknowledged one on, and no
    /// more than `max_bytes` of them unless the first alone is larger.
    pub fn peek(&self, max: usize, max_bytes: u64) -> Result<Batch, SpoolError> {
        let st = self.lock();
        let mut pos = st.acked;
        let mut records = Vec::new();
        let mut bytes_left = max_bytes;
        let mut full = false;
        while records.len() < max && !full && pos.segment <= st.head {
            let path = segment_path(&self.dir, pos.segment);
            let len = if pos.segment == st.head {
                st.head_len
            } else {
                match std::fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(_) => 0,
                }
            };
            if pos.offset >= len {
                if pos.segment == st.head {
                    break;
                }
                pos = Pos {
                    segment: pos.segment + 1,
                    offset: 0,
                };
                continue;
            }
            let mut f = File::open(&path).map_err(io(&path))?;
            f.seek(SeekFrom::Start(pos.offset)).map_err(io(&path))?;
            let mut r = BufReader::with_capacity(256 << 10, f.take(len - pos.offset));
            while records.len() < max {
                match read_record(&mut r).map_err(io(&path))? {
                    Some(bytes) => {
                        let framed = HEADER + bytes.len() as u64;
                        if framed > bytes_left && !records.is_empty() {
                            full = true;
                            break;
                        }
                        bytes_left = bytes_left.saturating_sub(framed);
                        pos.offset += framed;
                        records.push(bytes);
                    }
                    None => break,
                }
            }
            if pos.offset < len && records.len() < max && !full {
                // A bad record (damaged since the spool was opened): go on
                // from the next valid one rather than stall the queue or
                // drop the rest of the segment.
                let mut rest = Vec::new();
                File::open(&path)
                    .and_then(|mut f| {
                        f.seek(SeekFrom::Start(pos.offset))?;
                        f.take(len - pos.offset).read_to_end(&mut rest)
                    })
                    .map_err(io(&path))?;
                let skip = next_frame(&rest, 0).map_or(len - pos.offset, |q| q as u64);
                tracing::error!(
                    segment = %path.display(),
                    offset = pos.offset,
                    bytes = skip,
                    "spool record fails its checksum; skipped to the next valid one"
                );
                pos.offset += skip;
            }
        }
        Ok(Batch { records, end: pos })
    }

    /// Records that a batch ending at `end` is being exported.
    pub fn mark_inflight(&self, end: Pos) -> Result<(), SpoolError> {
        let mut st = self.lock();
        st.inflight = end;
        let (acked, inflight) = (st.acked, st.inflight);
        st.cursor.write(acked, inflight)
    }

    /// The backend has everything before `end`: forget it.
    pub fn ack(&self, end: Pos, records: usize) -> Result<(), SpoolError> {
        let mut st = self.lock();
        let bytes = bytes_between(&self.dir, st.acked, end, st.head, st.head_len);
        st.pending_bytes = st.pending_bytes.saturating_sub(bytes);
        st.pending_records = st.pending_records.saturating_sub(records as u64);
        let old = st.acked.segment;
        st.acked = end;
        st.inflight = st.inflight.max(end);
        let (acked, inflight) = (st.acked, st.inflight);
        st.cursor.write(acked, inflight)?;
        for seg in old..st.acked.segment {
            let _ = std::fs::remove_file(segment_path(&self.dir, seg));
        }
        Ok(())
    }

    /// (records, bytes) waiting for export.
    pub fn depth(&self) -> (u64, u64) {
        let st = self.lock();
        (st.pending_records, st.pending_bytes)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The most bytes the spool holds (`max_kib`).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Keeps a record the backend refused as a line of `rejected.jsonl`
    /// beside the spool. The file is rotated at an eighth of the spool's
    /// budget, so the two take at most about a quarter of it, and they
    /// count within it: rejected records never push the spool past
    /// `max_bytes`, they only leave less room for pending ones.
    pub fn keep_rejected(&self, line: &[u8]) {
        let path = self.dir.join(REJECTED);
        let cap = (self.max_bytes / 8).max(1);
        let mut st = self.lock();
        if let Err(e) = append_capped(&path, line, cap) {
            tracing::error!(path = %path.display(), "cannot keep a rejected record: {e}");
        }
        st.rejected_bytes = rejected_on_disk(&self.dir);
    }

    /// Bytes the rejected records take (`rejected.jsonl` and its rotated
    /// copy), counted within `max_bytes`.
    pub fn rejected_bytes(&self) -> u64 {
        self.lock().rejected_bytes
    }
}

const REJECTED: &str = "rejected.jsonl";

/// What `rejected.jsonl` and `rejected.jsonl.1` take in `dir`.
fn rejected_on_disk(dir: &Path) -> u64 {
    [REJECTED, "rejected.jsonl.1"]
        .iter()
        .filter_map(|name| std::fs::symlink_metadata(dir.join(name)).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Appends `line` and a newline to `path`, first moving a file that would
/// grow past `cap` bytes to `path.1` (replacing an older one), so the two
/// together stay under twice `cap`.
fn append_capped(path: &Path, line: &[u8], cap: u64) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let len = std::fs::symlink_metadata(path).map_or(0, |m| m.len());
    if len > 0 && len + line.len() as u64 + 1 > cap {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(path, &old)?;
        tracing::warn!(
            path = %path.display(),
            "rejected records reached {cap} bytes; the older ones moved to {}.1, replacing what was there",
            path.display()
        );
    }
    let mut buf = line.to_vec();
    buf.push(b'\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(&buf))
}

fn bytes_between(dir: &Path, from: Pos, to: Pos, head: u64, head_len: u64) -> u64 {
    if from.segment == to.segment {
        return to.offset.saturating_sub(from.offset);
    }
    let len_of = |seg: u64| {
        if seg == head {
            head_len
        } else {
            std::fs::metadata(segment_path(dir, seg))
                .map(|m| m.len())
                .unwrap_or(0)
        }
    };
    let mut total = len_of(from.segment).saturating_sub(from.offset);
    for seg in from.segment + 1..to.segment {
        total += len_of(seg);
    }
    total + to.offset
}

/// Takes the spool's exclusive lock, or says who holds it.
fn take_lock(dir: &Path) -> Result<File, SpoolError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("lock");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io(&path))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(&path)(e));
        }
        let mut text = String::new();
        let _ = (&mut f).take(512).read_to_string(&mut text);
        let holder = match text.trim() {
            "" => "holder unknown".to_string(),
            t => crate::terminal::escape(t).into_owned(),
        };
        return Err(SpoolError::Locked {
            path: dir.to_path_buf(),
            holder,
        });
    }
    // Ours now: say who we are for the next one that tries.
    let args: Vec<String> = std::env::args().take(3).collect();
    let me = format!("pid {}: {}\n", std::process::id(), args.join(" "));
    f.set_len(0)
        .and_then(|()| f.write_all(me.as_bytes()))
        .map_err(io(&path))?;
    Ok(f)
}

fn segment_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:016}.seg"))
}

fn open_append(path: &Path) -> Result<File, SpoolError> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Valid records from `start`: the end of the last good one, each one's
/// offset, and the corrupt bytes skipped between them.
fn scan(path: &Path, start: u64) -> Result<(u64, Vec<u64>, u64), SpoolError> {
    let mut f = File::open(path).map_err(io(path))?;
    f.seek(SeekFrom::Start(start)).map_err(io(path))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data).map_err(io(path))?;
    let mut p = 0usize;
    let mut good_end = 0usize;
    let mut skipped = 0u64;
    let mut offsets = Vec::new();
    loop {
        match frame_at(&data, p) {
            Frame::Record(len) => {
                offsets.push(start + p as u64);
                p += HEADER as usize + len;
                good_end = p;
            }
            Frame::End => break,
            Frame::Bad => match next_frame(&data, p) {
                Some(q) => {
                    tracing::error!(
                        segment = %path.display(),
                        offset = start + p as u64,
                        bytes = q - p,
                        "corrupt spool record; skipped to the next valid one"
                    );
                    skipped += (q - p) as u64;
                    p = q;
                }
                // Nothing valid follows: a torn tail, cut by the caller.
                None => break,
            },
        }
    }
    Ok((start + good_end as u64, offsets, skipped))
}

/// What is at an offset of a segment's bytes.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// A whole record whose checksum holds, of this many bytes.
    Record(usize),
    /// The end of the data, exactly.
    End,
    /// Anything else: torn, corrupt, or not a frame boundary.
    Bad,
}

fn frame_at(data: &[u8], p: usize) -> Frame {
    if p == data.len() {
        return Frame::End;
    }
    let Some(header) = data.get(p..p + HEADER as usize) else {
        return Frame::Bad;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD {
        return Frame::Bad;
    }
    let body_start = p + HEADER as usize;
    match data.get(body_start..body_start + len as usize) {
        Some(body) if crc32fast::hash(body) == crc => Frame::Record(len as usize),
        _ => Frame::Bad,
    }
}

/// Whether valid records run from `q` to the exact end of `data` (at least
/// one of them).
fn runs_to_end(data: &[u8], q: usize, budget: &mut usize) -> bool {
    let mut r = q;
    loop {
        match frame_at(data, r) {
            Frame::Record(len) => {
                *budget = budget.saturating_sub(len);
                r += HEADER as usize + len;
            }
            Frame::End => return r > q,
            Frame::Bad => return false,
        }
    }
}

/// Bytes hashed while looking for the next frame after corruption; past
/// it the rest of the segment is given up (and counted) instead.
const RESYNC_BUDGET: usize = 64 << 20;

/// The offset of the next valid record after a bad one at `p`, from which
/// valid records run to the end of `data`; `None` when there is none.
///
/// First where the bad record's own length says the next one starts (the
/// usual damage is to a record's body, not its header), then every byte
/// on. Requiring the whole rest to frame cleanly keeps a record-shaped
/// string inside a finding (text an attacker chooses) from being taken
/// for a record.
fn next_frame(data: &[u8], p: usize) -> Option<usize> {
    let mut budget = RESYNC_BUDGET;
    if let Some(h) = data.get(p..p + 4) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let q = p + HEADER as usize + len;
        if len <= MAX_RECORD as usize && q < data.len() && runs_to_end(data, q, &mut budget) {
            return Some(q);
        }
    }
    let mut q = p + 1;
    while q + (HEADER as usize) <= data.len() {
        if matches!(frame_at(data, q), Frame::Record(_)) && runs_to_end(data, q, &mut budget) {
            return Some(q);
        }
        // A candidate's checksum costs its claimed length.
        let len = data
            .get(q..q + 4)
            .map_or(0, |h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize);
        if len <= MAX_RECORD as usize && q + HEADER as usize + len <= data.len() {
            budget = budget.saturating_sub(len);
        }
        if budget == 0 {
            return None;
        }
        q += 1;
    }
    None
}

/// The next record, or `None` at the end or at a torn/corrupt record.
fn read_record(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; HEADER as usize];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD {
        return Ok(None);
    }
    // Not `vec![0; len]`: zeroing every record before overwriting it was a
    // visible share of export CPU.
    let mut bytes = Vec::with_capacity(len as usize);
    if r.take(len.into()).read_to_end(&mut bytes)? < len as usize {
        return Ok(None);
    }
    if crc32fast::hash(&bytes) != crc {
        return Ok(None);
    }
    Ok(Some(bytes))
}

/// The `cursor` file: `acked` and `inflight`, then a CRC-32 of both.
struct CursorFile {
    path: PathBuf,
    file: File,
}

const CURSOR_LEN: usize = 36;

impl CursorFile {
    /// The file and the positions it holds: `(0, 0)` twice for a new
    /// spool, `None` when what it holds does not read back.
    fn open(dir: &Path) -> Result<(CursorFile, Option<(Pos, Pos)>), SpoolError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("cursor");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        let mut saved = Vec::new();
        file.read_to_end(&mut saved).map_err(io(&path))?;
        let positions = if saved.is_empty() {
            Some(Default::default())
        } else {
            decode_cursor(&saved).or_else(|| decode_text_cursor(&saved))
        };
        if saved.len() != CURSOR_LEN {
            // Writes go in place: a longer old file would leave a tail.
            file.set_len(0).map_err(io(&path))?;
        }
        Ok((CursorFile { path, file }, positions))
    }

    fn write(&mut self, acked: Pos, inflight: Pos) -> Result<(), SpoolError> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; CURSOR_LEN];
        for (i, n) in [
            acked.segment,
            acked.offset,
            inflight.segment,
            inflight.offset,
        ]
        .into_iter()
        .enumerate()
        {
            buf[i * 8..i * 8 + 8].copy_from_slice(&n.to_le_bytes());
        }
        let crc = crc32fast::hash(&buf[..32]);
        buf[32..].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all_at(&buf, 0).map_err(io(&self.path))
    }
}

fn decode_cursor(b: &[u8]) -> Option<(Pos, Pos)> {
    let b: &[u8; CURSOR_LEN] = b.try_into().ok()?;
    let crc = u32::from_le_bytes([b[32], b[33], b[34], b[35]]);
    if crc32fast::hash(&b[..32]) != crc {
        return None;
    }
    let n = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    Some((
        Pos {
            segment: n(0),
            offset: n(1),
        },
        Pos {
            segment: n(2),
            offset: n(3),
        },
    ))
}

/// The text cursor ("acked_seg acked_off inflight_seg inflight_off") that
/// earlier versions replaced by rename; read so that an upgrade resumes
/// where the old daemon stopped.
fn decode_text_cursor(b: &[u8]) -> Option<(Pos, Pos)> {
    let text = std::str::from_utf8(b).ok()?;
    let nums: Vec<u64> = text
        .split_whitespace()
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    match nums[..] {
        [s, o, is, io] => Some((
            Pos {
                segment: s,
                offset: o,
            },
            Pos {
                segment: is,
                offset: io,
            },
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rejected_records_rotate_under_their_cap() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("rejected.jsonl");
        let line = [b'x'; 99];
        for _ in 0..25 {
            append_capped(&path, &line, 1000).unwrap();
        }
        let len = |p: &Path| std::fs::metadata(p).unwrap().len();
        let rotated = d.path().join("rejected.jsonl.1");
        assert!(len(&path) <= 1000 && len(&rotated) <= 1000);
        // 25 lines of 100 bytes: the first 20 filled two files, the last
        // 5 are in the current one.
        assert_eq!(len(&path), 500);
        assert_eq!(len(&rotated), 1000);
    }

    use super::*;

    fn recs(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
        range.map(|i| format!("record {i}").into_bytes()).collect()
    }

    fn open(dir: &Path, max: u64) -> (Spool, Recovered) {
        Spool::open(dir, max).unwrap()
    }

    #[test]
    fn records_stay_until_acknowledged_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (s, rec) = open(dir.path(), 1 << 20);
        assert_eq!(rec, Recovered::default());
        let r = recs(0..10);
        assert_eq!(s.append(r.iter().map(Vec::as_slice)).unwrap(), 10);
        let b = s.peek(4, u64::MAX).unwrap();
        assert_eq!(b.records, r[..4]);
        s.mark_inflight(b.end).unwrap();
        s.ack(b.end, 4).unwrap();
        let b = s.peek(3, u64::MAX).unwrap();
        assert_eq!(b.records, r[4..7]);
        s.mark_inflight(b.end).unwrap();
        drop(s); // as if killed while 4..7 were in flight

        let (s, rec) = open(dir.path(), 1 << 20);
        assert_eq!(rec.pending, 6);
        assert_eq!(rec.maybe_delivered, 3);
        assert_eq!(s.depth().0, 6);
        let b = s.peek(100, u64::MAX).unwrap();
        assert_eq!(b.records, r[4..]);
        s.ack(b.end, b.records.len()).unwrap();
        assert_eq!(s.depth(), (0, 0));
        assert!(s.peek(10, u64::MAX).unwrap().records.is_empty());
    }

    #[test]
    fn a_torn_cursor_sends_everything_again_as_possible_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open(dir.path(), 1 << 20);
        s.append(recs(0..6).iter().map(Vec::as_slice)).unwrap();
        let b = s.peek(4, u64::MAX).unwrap();
        s.mark_inflight(b.end).unwrap();
        s.ack(b.end, 4).unwrap();
        drop(s);
        let cursor = dir.path().join("cursor");
        let mut bytes = std::fs::read(&cursor).unwrap();
        assert_eq!(bytes.len(), CURSOR_LEN);
        bytes[3] ^= 0xff;
        std::fs::write(&cursor, &bytes).unwrap();

        let (s, rec) = open(dir.path(), 1 << 20);
        assert!(rec.cursor_lost);
        assert_eq!((rec.pending, rec.maybe_delivered), (6, 6));
        assert_eq!(s.peek(10, u64::MAX).unwrap().records, recs(0..6));
        drop(s);
        // The rewritten cursor reads back; the possible duplicates are still
        // counted until they are sent.
        let (_, rec) = open(dir.path(), 1 << 20);
        assert!(!rec.cursor_lost);
        assert_eq!((rec.pending, rec.maybe_delivered), (6, 6));
    }

    #[test]
    fn an_earlier_versions_text_cursor_is_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open(dir.path(), 1 << 20);
        s.append(recs(0..5).iter().map(Vec::as_slice)).unwrap();
        let two = s.peek(2, u64::MAX).unwrap().end;
        let three = s.peek(3, u64::MAX).unwrap().end;
        drop(s);
        // Longer than the binary cursor, so a leftover tail would show.
        let text = format!(
            "{:020} {:020} {:020} {:020}\n",
            two.segment, two.offset, three.segment, three.offset
        );
        std::fs::write(dir.path().join("cursor"), text).unwrap();

        let (s, rec) = open(dir.path(), 1 << 20);
        assert!(!rec.cursor_lost);
        assert_eq!((rec.pending, rec.maybe_delivered), (3, 1));
        assert_eq!(s.peek(10, u64::MAX).unwrap().records, recs(2..5));
        drop(s);
        assert_eq!(
            std::fs::metadata(dir.path().join("cursor")).unwrap().len(),
            CURSOR_LEN as u64
        );
        let (_, rec) = open(dir.path(), 1 << 20);
        assert_eq!((rec.pending, rec.maybe_delivered), (3, 1));
    }

    #[test]
    fn a_batch_stops_at_its_byte_budget_but_always_takes_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open(dir.path(), 1 << 20);
        // Framed: 8 + 8 bytes each ("record N").
        let r = recs(0..6);
        s.append(r.iter().map(Vec::as_slice)).unwrap();
        let b = s.peek(10, 16 * 4 - 1).unwrap();
        assert_eq!(b.records, r[..3]);
        s.ack(b.end, 3).unwrap();
        // One record over the budget still leaves: it would block the rest.
        let b = s.peek(10, 1).unwrap();
        assert_eq!(b.records, r[3..4]);
        s.ack(b.end, 1).unwrap();
        let b = s.peek(10, 16 * 2).unwrap();
        assert_eq!(b.records, r[4..]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open(dir.path(), 1 << 20);
        s.append(recs(0..3).iter().map(Vec::as_slice)).unwrap();
        drop(s);
        let seg = list_segments(dir.path()).unwrap()[0];
        let path = segment_path(dir.path(), seg);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[50, 0, 0, 0, 1, 2, 3, 4, b'x']).unwrap();
        drop(f);
        let (s, rec) = open(dir.path(), 1 << 20);
        assert_eq!(rec.pending, 3);
        assert_eq!(rec.truncated_bytes, 9);
        s.append([b"after".as_slice()]).unwrap();
        let b = s.peek(10, u64::MAX).unwrap();
        assert_eq!(b.records.len(), 4);
        assert_eq!(b.records[3], b"after");
    }

    /// Flips one byte of the only segment at `offset`.
    fn corrupt(dir: &Path, offset: u64) {
        use std::os::unix::fs::FileExt;
        let seg = list_segments(dir).unwrap()[0];
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(segment_path(dir, seg))
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, offset).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], offset).unwrap();
    }

    #[test]
    fn a_corrupt_record_mid_segment_loses_only_itself() {
        // Each record is 16 bytes framed; record 4 starts at 64.
        for (what, offset) in [
            ("body", 64 + 8 + 3),
            ("length", 64 + 1),
            ("checksum", 64 + 5),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (s, _) = open(dir.path(), 1 << 20);
            let r = recs(0..10);
            s.append(r.iter().map(Vec::as_slice)).unwrap();
            drop(s);
            corrupt(dir.path(), offset);
            let (s, rec) = open(dir.path(), 1 << 20);
            assert_eq!(rec.pending, 9, "{what}");
            assert_eq!(rec.skipped_bytes, 16, "{what}");
            assert_eq!(rec.truncated_bytes, 0, "{what}");
            let b = s.peek(100, u64::MAX).unwrap();
            let mut want = r.clone();
            want.remove(4);
            assert_eq!(b.records, want, "{what}");
        }
    }

    #[test]
    fn a_record_damaged_while_open_is_skipped_by_peek_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open(dir.path(), 1 << 20);
        let r = recs(0..10);
        s.append(r.iter().map(Vec::as_slice)).unwrap();
        corrupt(dir.path(), 6 * 16 + 8 + 2);
        let b = s.peek(100, u64::MAX).unwrap();
        let mut want = r.clone();
        want.remove(6);
        assert_eq!(b.records, want);
    }

    #[test]
    fn a_record_shaped_string_inside_a_record_is_not_taken_for_one() {
        // A finding whose text is a whole frame: after damage to the
        // header of the record holding it, the resync must not stop
        // inside it (the rest would not frame cleanly to the end).
        let inner = b"forged";
        let mut payload = Vec::new();
        payload.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        payload.extend_from_slice(&crc32fast::hash(inner).to_le_bytes());
        payload.extend_from_slice(inner);
        payload.extend_from_slice(b" and more text");
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open(dir.path(), 1 << 20);
        s.append([b"first".as_slice(), &payload, b"last"]).unwrap();
        drop(s);
        // The second record's length field.
        corrupt(dir.path(), 8 + 5 + 2);
        let (s, rec) = open(dir.path(), 1 << 20);
        let b = s.peek(100, u64::MAX).unwrap();
        assert_eq!(b.records, [b"first".to_vec(), b"last".to_vec()]);
        assert_eq!(rec.pending, 2);
    }

    #[test]
    fn a_full_spool_refuses_and_frees_space_on_ack() {
        let dir = tempfile::tempdir().unwrap();
        // Each record: 8 bytes of framing + 8 ("record N").
        let (s, _) = open(dir.path(), 16 * 5);
        let r = recs(0..8);
        assert_eq!(s.append(r.iter().map(Vec::as_slice)).unwrap(), 5);
        assert_eq!(s.append([r[5].as_slice()]).unwrap(), 0);
        let b = s.peek(2, u64::MAX).unwrap();
        s.ack(b.end, 2).unwrap();
        assert_eq!(s.append(r[5..].iter().map(Vec::as_slice)).unwrap(), 2);
        assert_eq!(s.depth(), (5, 80));
    }

    #[test]
    fn rejected_records_count_within_the_budget_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        // 1600 bytes: rejected.jsonl rotates at 200.
        let (s, _) = open(dir.path(), 1600);
        let line = [b'r'; 149];
        s.keep_rejected(&line);
        s.keep_rejected(&line);
        // Rotated once: 150 bytes in each file, none beyond the two.
        assert_eq!(s.rejected_bytes(), 300);
        s.keep_rejected(&line);
        assert_eq!(s.rejected_bytes(), 300);
        // 16 bytes per record: 1300 bytes left hold 81 of them.
        let r: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("record{i:02}").into_bytes())
            .collect();
        assert_eq!(s.append(r.iter().map(Vec::as_slice)).unwrap(), 81);
        drop(s);
        let (s, _) = open(dir.path(), 1600);
        assert_eq!(s.rejected_bytes(), 300);
        assert_eq!(s.append([r[0].as_slice()]).unwrap(), 0);
    }

    #[test]
    fn segments_roll_and_are_removed_once_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open(dir.path(), 1 << 20); // 64 KiB segments
        let big = vec![7u8; 10_000];
        for _ in 0..20 {
            s.append([big.as_slice()]).unwrap();
        }
        assert!(list_segments(dir.path()).unwrap().len() >= 3);
        let mut total = 0;
        loop {
            let b = s.peek(7, u64::MAX).unwrap();
            if b.records.is_empty() {
                break;
            }
            total += b.records.len();
            s.ack(b.end, b.records.len()).unwrap();
        }
        assert_eq!(total, 20);
        // Only the head segment is left.
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
        assert_eq!(s.depth(), (0, 0));
        drop(s);
        let (_, rec) = open(dir.path(), 1 << 20);
        assert_eq!(rec.pending, 0);
    }

    #[test]
    fn a_directory_of_another_owner_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("spool");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let other = if euid == 0 { 65534 } else { 0 };
        let path = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid path; uid/gid of -1 leaves the group.
        if unsafe { libc::chown(path.as_ptr(), other, u32::MAX) } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "chown needs root, and CI runs as root"
            );
            return;
        }
        let e = Spool::open(&d, 1 << 20).err().expect("refused");
        assert!(
            matches!(e, SpoolError::NotOwned { owner, .. } if owner == other),
            "{e}"
        );
    }

    #[test]
    fn a_shared_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("spool");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            Spool::open(&d, 1 << 20),
            Err(SpoolError::Insecure { .. })
        ));
    }

    #[test]
    fn a_second_opener_is_refused_and_told_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open(dir.path(), 1 << 20);
        s.append([b"kept".as_slice()]).unwrap();
        let err = Spool::open(dir.path(), 1 << 20)
            .err()
            .expect("a second opener must be refused");
        let text = err.to_string();
        assert!(matches!(err, SpoolError::Locked { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        // The refused opener touched nothing: the holder's record is there.
        assert_eq!(s.depth().0, 1);
        drop(s);
        let (s, rec) = open(dir.path(), 1 << 20);
        assert_eq!(rec.pending, 1);
        assert_eq!(s.peek(10, u64::MAX).unwrap().records, [b"kept".to_vec()]);
    }

    /// A tmpfs of `kib` KiB mounted on a fresh directory, unmounted on drop.
    struct SmallFs(tempfile::TempDir);

    impl SmallFs {
        fn mount(kib: u64) -> SmallFs {
            let d = tempfile::tempdir().unwrap();
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={kib}k,mode=0700")])
                .arg("tmpfs")
                .arg(d.path())
                .output()
                .expect("running mount");
            assert!(
                out.status.success(),
                "mounting a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            SmallFs(d)
        }
    }

    impl Drop for SmallFs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[test]
    fn a_full_filesystem_loses_nothing_already_spooled_and_stays_framed() {
        let fs = SmallFs::mount(256);
        let dir = fs.0.path().join("spool");
        // Space to free later, so appends can succeed again.
        let filler = fs.0.path().join("filler");
        std::fs::write(&filler, vec![0u8; 64 << 10]).unwrap();
        let (s, _) = open(&dir, 64 << 20);
        let record = |i: usize| format!("{i:06}{}", "r".repeat(3000)).into_bytes();
        let mut kept = Vec::new();
        let mut failures = 0;
        for i in 0..200 {
            // Several records per write, so a failed write is a torn batch.
            let batch: Vec<Vec<u8>> = (0..3).map(|j| record(i * 3 + j)).collect();
            match s.append(batch.iter().map(Vec::as_slice)) {
                Ok(n) => kept.extend(batch.into_iter().take(n)),
                Err(e) => {
                    assert!(e.to_string().contains("No space left"), "{e}");
                    failures += 1;
                }
            }
        }
        assert!(failures > 0, "the filesystem never filled");
        assert!(!kept.is_empty());
        std::fs::remove_file(&filler).unwrap();
        let after: Vec<Vec<u8>> = (0..3).map(|j| record(100_000 + j)).collect();
        assert_eq!(s.append(after.iter().map(Vec::as_slice)).unwrap(), 3);
        kept.extend(after);
        // Everything kept reads back, in order, with nothing skipped.
        let read = |s: &Spool| {
            let mut got = Vec::new();
            loop {
                let b = s.peek(50, u64::MAX).unwrap();
                if b.records.is_empty() {
                    break got;
                }
                s.ack(b.end, b.records.len()).unwrap();
                got.extend(b.records);
            }
        };
        drop(s);
        let (s, rec) = open(&dir, 64 << 20);
        assert_eq!(rec.truncated_bytes, 0, "no torn frame was left");
        assert_eq!(rec.pending, kept.len() as u64);
        let got = read(&s);
        assert_eq!(got.len(), kept.len());
        assert!(got == kept, "records differ after a full filesystem");
    }
}

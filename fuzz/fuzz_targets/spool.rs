//! A spool directory left by a crash, a full disk or an attacker: the input
//! is a segment (and, after a 0xff 0xfe separator, the cursor). Recovery
//! must open it and hand out only whole records, whatever the bytes.
#![no_main]

use driftwatch::sink::spool::Spool;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (segment, cursor) = match data.windows(2).position(|w| w == [0xff, 0xfe]) {
        Some(i) => (&data[..i], Some(&data[i + 2..])),
        None => (data, None),
    };
    let Ok(dir) = tempfile::Builder::new().tempdir_in(scratch()) else {
        return;
    };
    let spool = dir.path().join("spool");
    if std::fs::create_dir(&spool).is_err()
        || std::fs::write(spool.join("0000000000000001.seg"), segment).is_err()
    {
        return;
    }
    if let Some(c) = cursor {
        let _ = std::fs::write(spool.join("cursor"), c);
    }
    let Ok((spool, _recovered)) = Spool::open(&spool, 1 << 20) else {
        return;
    };
    for _ in 0..64 {
        match spool.peek(256, 1 << 20) {
            Ok(b) if !b.records.is_empty() => {
                let n = b.records.len();
                if spool.ack(b.end, n).is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
});

/// tmpfs when there is one: every input is a few files.
fn scratch() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

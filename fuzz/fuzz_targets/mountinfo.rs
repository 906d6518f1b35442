//! `/proc/<pid>/mountinfo` of a container (a container controls its mount
//! points' names) and the overlay options read from it.
#![no_main]

use std::path::Path;

use driftwatch::fsdiff::mountinfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        let _ = mountinfo::unescape(&String::from_utf8_lossy(data));
        return;
    };
    let _ = mountinfo::unescape(text);
    let _ = mountinfo::overlay_from_options(1, text);
    if let Ok(mounts) = mountinfo::parse(text, Path::new("/proc/1/mountinfo")) {
        let _ = mountinfo::root_mount(&mounts);
        let _ = mountinfo::root_overlay(1, &mounts);
        let _ = mountinfo::inner_mount_points(&mounts);
    }
});

//! A ring-buffer record as the kernel programs write it: the decoder must
//! reject or decode any bytes, never panic or read out of bounds.
#![no_main]

use std::sync::{Arc, OnceLock};

use driftwatch::source::ebpf::record::{Clock, Decoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // One decoder for the run, as in the daemon: its per-cgroup cache is
    // state that earlier records leave behind.
    static DECODER: OnceLock<std::sync::Mutex<Decoder>> = OnceLock::new();
    let decoder = DECODER.get_or_init(|| {
        std::sync::Mutex::new(Decoder::new(Clock::now(), Arc::from("fuzz"), 4026531840))
    });
    let mut d = decoder.lock().unwrap_or_else(|p| p.into_inner());
    let _ = d.decode(data);
});

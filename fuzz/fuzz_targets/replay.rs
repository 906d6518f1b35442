//! `driftwatch replay` input: JSON lines or a MessagePack stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = driftwatch::source::replay::parse(data);
});

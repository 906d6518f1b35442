//! MessagePack from the other side of the sandbox: event batches as plugins
//! decode them (borrowed), and verdicts and manifests as the host decodes
//! what a plugin returns.
#![no_main]

use driftwatch_sdk::{Event, EventRef, Manifest, Verdict, codec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode_array(data, |_: EventRef<'_>| {});
    let _ = codec::decode_array(data, |_: Event| {});
    let _ = codec::decode::<Manifest>(data);
    // The host's way: the count first, then item by item.
    if let Ok(mut items) = codec::ArrayDecoder::new(data) {
        for _ in 0..items.len().min(4096) {
            if items.item::<Verdict>().is_err() {
                return;
            }
        }
        let _ = items.finish();
    }
});

//! The plugin trait: what a plugin author implements.
//!
//! The same batch loop serves the WASM guest glue ([`crate::guest`]) and
//! native callers (the collector's benchmarks), so "native" and "in the
//! sandbox" run identical code around the rule logic.

use serde::de::DeserializeOwned;

use crate::codec::{self, ArrayDecoder, CodecError};
use crate::{EventRef, Manifest, Verdict};

/// A detection plugin. One value lives per plugin instance; the host calls
/// [`Plugin::process`] for each event it sends, in order.
pub trait Plugin: Sized + 'static {
    /// The plugin's `config` table from pipeline.toml. Use
    /// `#[serde(default, deny_unknown_fields)]` so a typo is an init error.
    type Config: DeserializeOwned + Default;

    fn new(config: Self::Config) -> Result<Self, String>;

    fn manifest(&self) -> Manifest;

    /// Decides about one event. Return [`Verdict::pass`] when there is
    /// nothing to say; it costs one byte on the wire.
    ///
    /// The event's strings borrow from the batch the host sent (no copies);
    /// an owned [`crate::Event`] gives one with `as_event_ref()`.
    fn process(&mut self, event: &EventRef<'_>) -> Verdict;
}

/// Decodes a plugin config map; an empty payload means "no table".
pub fn decode_config<C: DeserializeOwned + Default>(bytes: &[u8]) -> Result<C, String> {
    if bytes.is_empty() {
        return Ok(C::default());
    }
    codec::decode(bytes).map_err(|e| format!("invalid plugin config: {e}"))
}

/// Runs `plugin` over a MessagePack array of events and returns the
/// MessagePack array of verdicts, one per event.
pub fn process_batch<P: Plugin>(plugin: &mut P, events: &[u8]) -> Result<Vec<u8>, CodecError> {
    // Pass verdicts encode to one byte; reserve for the common case.
    let mut out = Vec::with_capacity(events.len() / 64 + 8);
    let mut items = ArrayDecoder::new(events)?;
    codec::write_array_header(&mut out, items.len());
    for _ in 0..items.len() {
        let ev: EventRef<'_> = items.item()?;
        let verdict = plugin.process(&ev);
        codec::encode_verdict(&mut out, &verdict)?;
    }
    items.finish()?;
    Ok(out)
}

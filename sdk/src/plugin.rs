//! The plugin trait: what a plugin author implements.
//!
//! The same batch loop serves the WASM guest glue ([`crate::guest`]) and
//! native callers (the collector's benchmarks), so "native" and "in the
//! sandbox" run identical code around the rule logic.

use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};
use crate::{Event, Manifest, Verdict};

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
    fn process(&mut self, event: &Event) -> Verdict;
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
    let mut rd = events;
    let len =
        rmp::decode::read_array_len(&mut rd).map_err(|e| CodecError::Header(e.to_string()))?;
    codec::write_array_header(&mut out, len as usize);
    let mut de = rmp_serde::Deserializer::new(rd);
    for _ in 0..len {
        let ev: Event = serde::Deserialize::deserialize(&mut de)?;
        let verdict = plugin.process(&ev);
        codec::encode_into(&mut out, &verdict)?;
    }
    let rest = de.into_inner();
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(out)
}

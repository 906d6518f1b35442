//! MessagePack encoding of everything that crosses the plugin boundary.
//!
//! Structs are encoded as maps with named fields (never positional arrays),
//! so plugins in any language read fields by name and old plugins skip new
//! fields. A batch is a MessagePack array of items.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::msgpack;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding MessagePack: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("decoding MessagePack: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("decoding MessagePack array header: {0}")]
    Header(String),
    #[error("decoding MessagePack: {0}")]
    Msgpack(#[from] msgpack::Error),
    #[error("{0} trailing bytes after the last item")]
    Trailing(usize),
}

/// Encodes one value as a MessagePack map with named fields.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Appends one value to `buf`.
pub fn encode_into<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<(), CodecError> {
    value.serialize(&mut rmp_serde::Serializer::new(buf).with_struct_map())?;
    Ok(())
}

/// Appends one verdict; "pass, nothing to say" is the one byte `0x80`
/// without going through the serializer.
pub fn encode_verdict(buf: &mut Vec<u8>, v: &crate::Verdict) -> Result<(), CodecError> {
    if v.is_pass() {
        buf.push(0x80);
        return Ok(());
    }
    encode_into(buf, v)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// Writes a MessagePack array header for `len` items.
pub fn write_array_header(buf: &mut Vec<u8>, len: usize) {
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_array_len(buf, len as u32);
}

/// Decodes a MessagePack array item by item, handing each to `f`, without
/// materializing a `Vec` of the whole batch. Items may borrow from `bytes`
/// (e.g. [`crate::EventRef`]): strings are not copied.
pub fn decode_array<'de, T, F>(bytes: &'de [u8], mut f: F) -> Result<usize, CodecError>
where
    T: Deserialize<'de>,
    F: FnMut(T),
{
    let mut items = ArrayDecoder::new(bytes)?;
    let len = items.len();
    for _ in 0..len {
        f(items.item()?);
    }
    items.finish()?;
    Ok(len)
}

/// Reads a MessagePack array one item at a time, borrowing from the input
/// (with [`crate::msgpack`], the fast path every plugin batch takes).
pub struct ArrayDecoder<'de> {
    de: msgpack::Deserializer<'de>,
    len: usize,
}

impl<'de> ArrayDecoder<'de> {
    /// Reads the array header.
    pub fn new(bytes: &'de [u8]) -> Result<ArrayDecoder<'de>, CodecError> {
        let mut rd = bytes;
        let len =
            rmp::decode::read_array_len(&mut rd).map_err(|e| CodecError::Header(e.to_string()))?;
        Ok(ArrayDecoder {
            de: msgpack::Deserializer::new(rd),
            len: len as usize,
        })
    }

    /// The number of items the header announced.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Decodes the next item. The caller reads at most [`Self::len`] items.
    pub fn item<T: Deserialize<'de>>(&mut self) -> Result<T, CodecError> {
        Ok(T::deserialize(&mut self.de)?)
    }

    /// Checks that nothing follows the last item.
    pub fn finish(self) -> Result<(), CodecError> {
        match self.de.remaining().len() {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

/// Encodes a slice as a MessagePack array.
pub fn encode_array<T: Serialize>(items: &[T]) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::with_capacity(items.len() * 4 + 5);
    write_array_header(&mut buf, items.len());
    for it in items {
        encode_into(&mut buf, it)?;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, EventKind, Verdict};

    #[test]
    fn events_are_maps_with_named_fields() {
        let ev = Event {
            kind: EventKind::OpenWrite,
            ..Event::default()
        };
        let bytes = encode(&ev).unwrap();
        // fixmap marker, and the field name is present on the wire.
        assert_eq!(bytes[0] & 0xf0, 0x80);
        assert!(bytes.windows(4).any(|w| w == b"kind"));
        let back: Event = decode(&bytes).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn pass_verdict_is_an_empty_map() {
        assert_eq!(encode(&Verdict::pass()).unwrap(), vec![0x80]);
    }

    #[test]
    fn array_round_trip_and_trailing_garbage() {
        let items = vec![Verdict::pass(), Verdict::drop()];
        let mut bytes = encode_array(&items).unwrap();
        let mut out = Vec::new();
        decode_array::<Verdict, _>(&bytes, |v| out.push(v)).unwrap();
        assert_eq!(out, items);
        bytes.push(0xc0);
        assert!(matches!(
            decode_array::<Verdict, _>(&bytes, |_| {}),
            Err(CodecError::Trailing(1))
        ));
        // Not even valid MessagePack after the last item.
        bytes.pop();
        bytes.push(0xc1);
        assert!(matches!(
            decode_array::<Verdict, _>(&bytes, |_| {}),
            Err(CodecError::Trailing(1))
        ));
        // Too few items is an error too.
        bytes.pop();
        bytes.pop();
        assert!(decode_array::<Verdict, _>(&bytes, |_| {}).is_err());
    }

    #[test]
    fn events_decode_borrowed() {
        let ev = Event {
            hostname: "node-1".into(),
            ..Event::default()
        };
        let bytes = encode_array(&[ev.clone(), ev.clone()]).unwrap();
        let mut out = Vec::new();
        decode_array::<crate::EventRef<'_>, _>(&bytes, |e| out.push(e)).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].hostname, "node-1");
        assert_eq!(out[0].to_event(), ev);
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_ones_default() {
        let json = r#"{"kind":"exec","future_field":42,"process":{"name":"sh"}}"#;
        let ev: Event = serde_json::from_str(json).unwrap();
        assert_eq!(ev.process.name, "sh");
        assert_eq!(ev.schema_version, crate::SCHEMA_VERSION);
    }

    #[test]
    fn events_of_an_unknown_schema_are_refused() {
        for v in [0, crate::SCHEMA_VERSION + 1] {
            let json = format!(r#"{{"schema_version":{v},"kind":"exec"}}"#);
            let err = serde_json::from_str::<Event>(&json)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("schema_version {v} is not supported")),
                "{err}"
            );
            let ev = Event {
                schema_version: v,
                ..Event::default()
            };
            let err = decode::<Event>(&encode(&ev).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains("is not supported"), "{err}");
        }
    }
}

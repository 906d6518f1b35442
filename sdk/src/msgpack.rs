//! A borrowing MessagePack deserializer for serde, for the hot path: every
//! plugin decodes every event of every batch.
//!
//! It reads straight from a byte slice: strings and binaries come out as
//! slices of the input (no copy), and field names are matched without
//! allocating. It is generic (nothing here knows the schema) and accepts
//! what `rmp-serde` writes: structs as maps with named fields (or as
//! positional arrays), enums as strings (or `{variant: value}` maps),
//! `nil` for `None`. Extension types are refused, and skipped when ignored.
//! Malformed input is an error, never a panic.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

/// Nesting deeper than this is refused (no stack exhaustion on hostile input).
const MAX_DEPTH: u16 = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

fn eof() -> Error {
    Error("unexpected end of MessagePack data".into())
}

type Result<T> = std::result::Result<T, Error>;

/// Deserializes values one after another from `input`.
pub struct Deserializer<'de> {
    input: &'de [u8],
    depth: u16,
}

impl<'de> Deserializer<'de> {
    pub fn new(input: &'de [u8]) -> Deserializer<'de> {
        Deserializer { input, depth: 0 }
    }

    /// What has not been read yet.
    pub fn remaining(&self) -> &'de [u8] {
        self.input
    }

    #[inline(always)]
    fn byte(&mut self) -> Result<u8> {
        let (&b, rest) = self.input.split_first().ok_or_else(eof)?;
        self.input = rest;
        Ok(b)
    }

    #[inline(always)]
    fn peek(&self) -> Result<u8> {
        self.input.first().copied().ok_or_else(eof)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if n > self.input.len() {
            return Err(eof());
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    #[inline(always)]
    fn u8(&mut self) -> Result<u8> {
        self.byte()
    }

    #[inline(always)]
    fn u16(&mut self) -> Result<u16> {
        self.array().map(u16::from_be_bytes)
    }

    #[inline(always)]
    fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_be_bytes)
    }

    #[inline(always)]
    fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_be_bytes)
    }

    /// The length of a string whose marker was just read, if it is one.
    #[inline(always)]
    fn str_len(&mut self, marker: u8) -> Result<Option<usize>> {
        Ok(Some(match marker {
            0xa0..=0xbf => (marker & 0x1f) as usize,
            0xd9 => self.u8()? as usize,
            0xda => self.u16()? as usize,
            0xdb => self.u32()? as usize,
            _ => return Ok(None),
        }))
    }

    #[inline(always)]
    fn str_data(&mut self, len: usize) -> Result<&'de str> {
        let bytes = self.take(len)?;
        // Names and most values are ASCII; the check is cheaper than full
        // UTF-8 validation.
        if bytes.is_ascii() {
            // SAFETY: ASCII is valid UTF-8.
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).map_err(|e| Error(format!("invalid UTF-8 in string: {e}")))
    }

    #[inline]
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_DEPTH {
            return Err(Error("MessagePack nested too deeply".into()));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn seq<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value> {
        self.nested(|de| {
            let mut access = Access { de, left: len };
            let value = visitor.visit_seq(&mut access)?;
            if access.left != 0 {
                return Err(Error(format!("{} array items left unread", access.left)));
            }
            Ok(value)
        })
    }

    fn map<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value> {
        self.nested(|de| {
            let mut access = Access { de, left: len };
            let value = visitor.visit_map(&mut access)?;
            if access.left != 0 {
                return Err(Error(format!("{} map entries left unread", access.left)));
            }
            Ok(value)
        })
    }

    /// Skips one value of any type, extension types included.
    fn skip(&mut self) -> Result<()> {
        let m = self.byte()?;
        let (items, data) = match m {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
            0x80..=0x8f => (2 * (m & 0x0f) as usize, 0),
            0x90..=0x9f => ((m & 0x0f) as usize, 0),
            0xa0..=0xbf => (0, (m & 0x1f) as usize),
            0xc4 | 0xd9 => (0, self.u8()? as usize),
            0xc5 | 0xda => (0, self.u16()? as usize),
            0xc6 | 0xdb => (0, self.u32()? as usize),
            0xc7 => (0, self.u8()? as usize + 1),
            0xc8 => (0, self.u16()? as usize + 1),
            0xc9 => (0, self.u32()? as usize + 1),
            0xca => (0, 4),
            0xcb => (0, 8),
            0xcc | 0xd0 => (0, 1),
            0xcd | 0xd1 => (0, 2),
            0xce | 0xd2 => (0, 4),
            0xcf | 0xd3 => (0, 8),
            0xd4 => (0, 2),
            0xd5 => (0, 3),
            0xd6 => (0, 5),
            0xd7 => (0, 9),
            0xd8 => (0, 17),
            0xdc => (self.u16()? as usize, 0),
            0xdd => (self.u32()? as usize, 0),
            0xde => (2 * self.u16()? as usize, 0),
            0xdf => (2 * self.u32()? as usize, 0),
            0xc1 => return Err(Error("invalid MessagePack marker 0xc1".into())),
        };
        self.take(data)?;
        if items > 0 {
            self.nested(|de| (0..items).try_for_each(|_| de.skip()))?;
        }
        Ok(())
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let m = self.byte()?;
        if let Some(len) = self.str_len(m)? {
            return visitor.visit_borrowed_str(self.str_data(len)?);
        }
        match m {
            0x00..=0x7f => visitor.visit_u64(m as u64),
            0xe0..=0xff => visitor.visit_i64(m as i8 as i64),
            0x80..=0x8f => self.map((m & 0x0f) as usize, visitor),
            0x90..=0x9f => self.seq((m & 0x0f) as usize, visitor),
            0xc0 => visitor.visit_unit(),
            0xc2 => visitor.visit_bool(false),
            0xc3 => visitor.visit_bool(true),
            0xc4 => {
                let n = self.u8()? as usize;
                visitor.visit_borrowed_bytes(self.take(n)?)
            }
            0xc5 => {
                let n = self.u16()? as usize;
                visitor.visit_borrowed_bytes(self.take(n)?)
            }
            0xc6 => {
                let n = self.u32()? as usize;
                visitor.visit_borrowed_bytes(self.take(n)?)
            }
            0xca => visitor.visit_f32(f32::from_bits(self.u32()?)),
            0xcb => visitor.visit_f64(f64::from_bits(self.u64()?)),
            0xcc => visitor.visit_u64(self.u8()? as u64),
            0xcd => visitor.visit_u64(self.u16()? as u64),
            0xce => visitor.visit_u64(self.u32()? as u64),
            0xcf => visitor.visit_u64(self.u64()?),
            0xd0 => visitor.visit_i64(self.u8()? as i8 as i64),
            0xd1 => visitor.visit_i64(self.u16()? as i16 as i64),
            0xd2 => visitor.visit_i64(self.u32()? as i32 as i64),
            0xd3 => visitor.visit_i64(self.u64()? as i64),
            0xdc => {
                let n = self.u16()? as usize;
                self.seq(n, visitor)
            }
            0xdd => {
                let n = self.u32()? as usize;
                self.seq(n, visitor)
            }
            0xde => {
                let n = self.u16()? as usize;
                self.map(n, visitor)
            }
            0xdf => {
                let n = self.u32()? as usize;
                self.map(n, visitor)
            }
            _ => Err(Error(format!(
                "unsupported MessagePack marker {m:#04x} (extension types are not used)"
            ))),
        }
    }

    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek()? == 0xc0 {
            self.input = &self.input[1..];
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let m = self.peek()?;
        match m {
            // A unit variant: its name.
            0xa0..=0xbf | 0xd9..=0xdb => {
                let m = self.byte()?;
                let len = self.str_len(m)?.unwrap_or(0);
                let name = self.str_data(len)?;
                visitor.visit_enum(name.into_deserializer())
            }
            // `{variant: value}`.
            0x81 => {
                self.byte()?;
                self.nested(|de| visitor.visit_enum(de))
            }
            _ => Err(Error(format!(
                "expected an enum (a string or a one-entry map), found marker {m:#04x}"
            ))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.skip()?;
        visitor.visit_unit()
    }

    // Fast paths for what events are made of: short strings (field names
    // and values), small integers, booleans. Anything else goes the
    // general way.

    #[inline]
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            m @ 0xa0..=0xbf => {
                self.input = &self.input[1..];
                visitor.visit_borrowed_str(self.str_data((m & 0x1f) as usize)?)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    #[inline]
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    #[inline]
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    #[inline]
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            m @ 0x00..=0x7f => {
                self.input = &self.input[1..];
                visitor.visit_u32(m as u32)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    #[inline]
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            m @ 0x00..=0x7f => {
                self.input = &self.input[1..];
                visitor.visit_u64(m as u64)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    #[inline]
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.peek()? {
            m @ (0xc2 | 0xc3) => {
                self.input = &self.input[1..];
                visitor.visit_bool(m == 0xc3)
            }
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u128 f32 f64 char
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
    }
}

/// Items of an array, or entries of a map.
struct Access<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Access<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        // Bounded by the input: a hostile length cannot make callers
        // preallocate gigabytes.
        Some(self.left.min(self.de.input.len()))
    }
}

impl<'de> de::MapAccess<'de> for Access<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left.min(self.de.input.len() / 2))
    }
}

impl<'de> de::EnumAccess<'de> for &mut Deserializer<'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let v = seed.deserialize(&mut *self)?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Deserializer<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<()> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, EventKind, EventRef, FileInfo, FileType, K8s, Priority, Verdict, codec};
    use serde::Deserialize;

    fn event() -> Event {
        let mut e = Event {
            time_ns: u64::MAX - 3,
            kind: EventKind::Rename,
            hostname: "nöde-1".into(),
            file: Some(FileInfo {
                path: "/a".into(),
                target_path: Some("/b".into()),
                file_type: FileType::Symlink,
                size: Some(1 << 40),
                uid: Some(0),
                ..FileInfo::default()
            }),
            k8s: Some(K8s {
                labels: [("app".to_string(), "web".to_string())].into(),
                ..K8s::default()
            }),
            ..Event::default()
        };
        e.process.args = vec!["x".repeat(40), "y".repeat(300), "z".repeat(70_000)];
        e.process.pid = 70_000;
        e
    }

    #[test]
    fn round_trips_what_rmp_serde_writes() {
        let e = event();
        let bytes = codec::encode(&e).unwrap();
        let mut de = Deserializer::new(&bytes);
        let r = EventRef::deserialize(&mut de).unwrap();
        assert!(de.remaining().is_empty());
        assert_eq!(r.to_event(), e);
        let owned = Event::deserialize(&mut Deserializer::new(&bytes)).unwrap();
        assert_eq!(owned, e);
        // Positional (array) encoding is read too.
        let positional = rmp_serde::to_vec(&e).unwrap();
        assert_eq!(
            Event::deserialize(&mut Deserializer::new(&positional)).unwrap(),
            e
        );
    }

    #[test]
    fn verdicts_numbers_and_unknown_fields() {
        let v = Verdict::with_finding(crate::Finding {
            rule: "r".into(),
            priority: Priority::Critical,
            output: "o".into(),
            description: None,
            tags: vec!["t".into()],
            fields: [("k".to_string(), "v".to_string())].into(),
            remediation: None,
        });
        let bytes = codec::encode(&v).unwrap();
        assert_eq!(
            Verdict::deserialize(&mut Deserializer::new(&bytes)).unwrap(),
            v
        );

        #[derive(serde::Serialize)]
        struct Future<'a> {
            kind: &'a str,
            future: (i64, f64, Option<u8>, &'a [u8], [bool; 2]),
            schema_version: u32,
        }
        let bytes = codec::encode(&Future {
            kind: "chmod",
            future: (-70_000, 1.5, None, b"\x00\xff", [true, false]),
            schema_version: 1,
        })
        .unwrap();
        let e = EventRef::deserialize(&mut Deserializer::new(&bytes)).unwrap();
        assert_eq!(e.kind, EventKind::Chmod);
        assert_eq!(e.schema_version, 1);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let bytes = codec::encode(&event()).unwrap();
        for cut in [1, 2, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(EventRef::deserialize(&mut Deserializer::new(&bytes[..cut])).is_err());
        }
        assert!(EventRef::deserialize(&mut Deserializer::new(&[0xc1])).is_err());
        // Invalid UTF-8 in a string.
        assert!(<&str>::deserialize(&mut Deserializer::new(&[0xa2, 0xff, 0xfe])).is_err());
        // Hostile lengths and nesting.
        assert!(
            Vec::<u8>::deserialize(&mut Deserializer::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]))
                .is_err()
        );
        let deep = vec![0x91; 10_000];
        assert!(serde::de::IgnoredAny::deserialize(&mut Deserializer::new(&deep)).is_err());
        assert!(Vec::<Vec<u8>>::deserialize(&mut Deserializer::new(&deep)).is_err());
        // Wrong types.
        assert!(u32::deserialize(&mut Deserializer::new(&[0xa1, b'x'])).is_err());
        assert!(u8::deserialize(&mut Deserializer::new(&[0xcd, 0x01, 0x00])).is_err());
        assert!(EventKind::deserialize(&mut Deserializer::new(&[0xa3, b'b', b'a', b'd'])).is_err());
    }
}

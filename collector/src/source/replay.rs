//! Replays recorded events from a file: JSON lines (the schema's JSON form,
//! one event per line, `#` comments and blank lines allowed) or MessagePack
//! (a stream of event maps, or one array of them).
//!
//! A bad record is reported with its line (or byte offset) and skipped; the
//! rest still flows, and the source fails at the end naming how many were bad.

use std::path::PathBuf;

use driftwatch_sdk::Event;

use super::{BoxFuture, Source, SourceContext, SourceError};

pub struct Replay {
    path: PathBuf,
}

impl Replay {
    pub fn new(path: PathBuf) -> Replay {
        Replay { path }
    }
}

/// Parses a whole replay file. Returns the good events and one message per
/// bad record.
pub fn parse(bytes: &[u8]) -> (Vec<Event>, Vec<String>) {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => (Vec::new(), Vec::new()),
        Some(b'{') | Some(b'#') => parse_json_lines(bytes),
        Some(_) => parse_msgpack(bytes),
    }
}

fn parse_json_lines(bytes: &[u8]) -> (Vec<Event>, Vec<String>) {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        match serde_json::from_slice::<Event>(trimmed) {
            Ok(ev) => events.push(ev),
            Err(e) => errors.push(format!("line {}: {e}", n + 1)),
        }
    }
    (events, errors)
}

fn parse_msgpack(bytes: &[u8]) -> (Vec<Event>, Vec<String>) {
    let mut events = Vec::new();
    // One top-level array holding every event.
    if matches!(bytes[0], 0x90..=0x9f | 0xdc | 0xdd) {
        return match driftwatch_sdk::codec::decode_array(bytes, |e| events.push(e)) {
            Ok(_) => (events, Vec::new()),
            Err(e) => (events, vec![format!("MessagePack array: {e}")]),
        };
    }
    let mut de = rmp_serde::Deserializer::new(bytes);
    loop {
        let offset = bytes.len() - de.get_ref().len();
        if offset == bytes.len() {
            return (events, Vec::new());
        }
        match serde::Deserialize::deserialize(&mut de) {
            Ok(ev) => events.push(ev),
            // A stream has no framing to resynchronize on after a bad record.
            Err(e) => {
                return (
                    events,
                    vec![format!(
                        "byte {offset}: {e}; the rest of the file is skipped"
                    )],
                );
            }
        }
    }
}

impl Source for Replay {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<Result<(), SourceError>> {
        Box::pin(async move {
            let bytes = tokio::fs::read(&self.path)
                .await
                .map_err(|source| SourceError::Read {
                    source_name: "replay",
                    path: self.path.clone(),
                    source,
                })?;
            let (events, errors) = parse(&bytes);
            for e in &errors {
                tracing::error!("{}: {e}", self.path.display());
            }
            for mut ev in events {
                if *ctx.shutdown.borrow() {
                    break;
                }
                if ev.hostname.is_empty() {
                    ev.hostname = ctx.hostname.to_string();
                }
                if ctx.events.send(ev).await.is_err() {
                    break;
                }
            }
            if errors.is_empty() {
                Ok(())
            } else {
                Err(SourceError::Failed {
                    source_name: "replay",
                    source: format!(
                        "{}: {} bad record(s) skipped (see above)",
                        self.path.display(),
                        errors.len()
                    )
                    .into(),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwatch_sdk::{EventKind, codec};

    #[test]
    fn json_lines_with_a_bad_line() {
        let text =
            b"# recorded\n{\"kind\":\"exec\"}\n\n{\"kind\":\"nope\"}\n{\"kind\":\"open_write\"}\n";
        let (evs, errs) = parse(text);
        assert_eq!(evs.len(), 2);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("line 4:"), "{errs:?}");
    }

    #[test]
    fn msgpack_stream_and_array() {
        let a = Event {
            kind: EventKind::Chmod,
            ..Event::default()
        };
        let mut stream = codec::encode(&a).unwrap();
        stream.extend(codec::encode(&a).unwrap());
        let (evs, errs) = parse(&stream);
        assert_eq!((evs.len(), errs.len()), (2, 0));
        let arr = codec::encode_array(&[a.clone(), a.clone(), a]).unwrap();
        let (evs, errs) = parse(&arr);
        assert_eq!((evs.len(), errs.len()), (3, 0));
        stream.push(0xc1);
        let (evs, errs) = parse(&stream);
        assert_eq!((evs.len(), errs.len()), (2, 1));
    }
}

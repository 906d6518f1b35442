//! Text for an administrator's terminal.
//!
//! File names, command lines, image references and pod names come from
//! containers and tenants. Printed raw, a name holding `ESC[1A ESC[2K` or a
//! carriage return erases or rewrites the lines above it, so a table could
//! hide the very entry it exists to show. Every human-readable output
//! (tables, summaries, log lines) passes such text through [`escape`];
//! JSON output needs nothing, its own escaping covers control characters.

use std::borrow::Cow;
use std::fmt::{self, Write};

/// `s` with every control character (C0, DEL, C1) and every bidirectional
/// formatting character (which reorders what is displayed) written as an
/// escape: `\x1b`, `\r`, `\u{202e}`. Other text is unchanged.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(Escaped(s).to_string())
}

/// Formats as [`escape`] does, without allocating.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(needs_escape) {
            f.write_str(&rest[..i])?;
            // `find` returned the start of a char.
            let Some(c) = rest[i..].chars().next() else {
                break;
            };
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// [`escape`], but line breaks stay line breaks: for multi-line messages
/// (an error with a source snippet) where a forged line is harmless next to
/// an erased one.
pub fn escape_lines(s: &str) -> String {
    s.split('\n')
        .map(|l| escape(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Pads to `width` characters after escaping, for table columns.
pub fn cell(s: &str, width: usize) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<width$}", escape(s));
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_escaped_and_the_rest_kept() {
        assert_eq!(escape("usr/bin/ls"), "usr/bin/ls");
        assert!(matches!(escape("plain é ü 日本"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\x1b[1A\x1b[2Kb\rc\nd\te\x7f\u{9b}f\u{202e}g"),
            "a\\x1b[1A\\x1b[2Kb\\rc\\nd\\te\\x7f\\u{9b}f\\u{202e}g"
        );
        assert_eq!(cell("\x07", 6), "\\x07  ");
        assert_eq!(escape_lines("a\x1b\nb\r"), "a\\x1b\nb\\r");
    }
}

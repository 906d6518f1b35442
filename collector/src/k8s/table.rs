//! Plain aligned text tables for the human reports.
//!
//! Cells hold tenant-controlled text (pod, container and image names, file
//! names, messages quoting them), so every cell is escaped for the
//! terminal here, once, rather than at each caller.

use std::io::Write;

use crate::terminal::escape;

/// Writes `rows` under `header`, each column as wide as its widest cell; the
/// last column is not padded so long details do not trail spaces.
pub fn write(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escape(c).into_owned()).collect())
        .collect();
    let n = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(n) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line =
        |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> std::io::Result<()> {
            let mut s = String::new();
            for (i, c) in cells.enumerate() {
                if i + 1 < n {
                    s.push_str(c);
                    s.extend(std::iter::repeat_n(' ', width[i] - c.chars().count() + 2));
                } else {
                    s.push_str(c);
                }
            }
            writeln!(out, "{}", s.trim_end())
        };
    line(out, &mut header.iter().copied())?;
    for r in &rows {
        line(out, &mut r.iter().map(String::as_str))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cells_are_escaped_for_the_terminal() {
        let mut out = Vec::new();
        super::write(
            &mut out,
            &["A", "B"],
            &[vec!["x\x1b[2Ky".into(), "evil\r\u{202e}".into()]],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "A          B\nx\\x1b[2Ky  evil\\r\\u{202e}\n");
        assert!(!text.contains('\x1b'));
    }
}

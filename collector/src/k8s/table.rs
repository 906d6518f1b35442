//! Plain aligned text tables for the human reports.

use std::io::Write;

/// Writes `rows` under `header`, each column as wide as its widest cell; the
/// last column is not padded so long details do not trail spaces.
pub fn write(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let n = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
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
    for r in rows {
        line(out, &mut r.iter().map(String::as_str))?;
    }
    Ok(())
}

//! What the client commands print for people: sizes in binary units and aligned columns. The
//! `--json` output is the commands' own structures, serialized (see `super::commands`).

/// A byte count in binary units, one decimal above bytes: `512 B`, `1.5 KiB`, `12.0 MiB`.
pub fn size(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

/// Text for a terminal: every control character but the line ends becomes `�`. Names, labels
/// and annotations are the pusher's: an escape sequence among them must not reach the terminal.
pub fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() && c != '\n' { '\u{FFFD}' } else { c }).collect()
}

/// Columns padded to their widest cell, two spaces apart, with no trailing spaces.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
    right: Vec<usize>,
    indent: usize,
}

impl Table {
    /// A table whose first row is `headers` (none when empty).
    pub fn new(headers: &[&str]) -> Self {
        let mut t = Self::default();
        if !headers.is_empty() {
            t.rows.push(headers.iter().map(|h| h.to_string()).collect());
        }
        t
    }

    /// Aligns column `col` (from 0) to the right, as numbers are.
    pub fn right(mut self, col: usize) -> Self {
        self.right.push(col);
        self
    }

    /// Every line starts with `n` spaces.
    pub fn indent(mut self, n: usize) -> Self {
        self.indent = n;
        self
    }

    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The lines, each ending in `\n`.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; cols];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = " ".repeat(self.indent);
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[i] - cell.chars().count());
                if self.right.contains(&i) {
                    line.push_str(&pad);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_do_not_reach_the_terminal() {
        assert_eq!(printable("a\u{1b}[2Jb\tc\r\nd\n"), "a\u{FFFD}[2Jb\u{FFFD}c\u{FFFD}\nd\n");
    }

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(10 * 1024 * 1024 + 512 * 1024), "10.5 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(size(5 << 40), "5.0 TiB");
        assert_eq!(size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn columns_align() {
        let mut t = Table::new(&["PLATFORM", "DIGEST", "SIZE"]).right(2);
        t.row(["linux/amd64", "sha256:aa", "1.2 KiB"]);
        t.row(["linux/arm64/v8", "sha256:bbbb", "527 B"]);
        t.row(["", "", ""]);
        assert_eq!(
            t.render(),
            "PLATFORM        DIGEST          SIZE\n\
             linux/amd64     sha256:aa    1.2 KiB\n\
             linux/arm64/v8  sha256:bbbb    527 B\n\
             \n"
        );
        let mut t = Table::new(&[]).indent(2);
        t.row(["a", "x"]);
        t.row(["élan", "y z "]);
        assert_eq!(t.render(), "  a     x\n  élan  y z\n", "widths count characters; no trailing spaces");
        assert_eq!(Table::new(&[]).render(), "");
    }
}

//! Distribution's `log.fields`: the same `key=value` pairs on every log line (Distribution's
//! stock `config.yml` has `service: registry`), or, on JSON lines, the same members.
//!
//! A [`tracing_subscriber::fmt::MakeWriter`] that takes each line the formatter writes (it
//! writes one whole line per event) and adds the fields before passing it to stderr.
//!
//! ```
//! use donjon::log_fields::WithFields;
//! let fields = [("service".to_string(), "registry".to_string())];
//! let w = WithFields::new(fields.iter().map(|(k, v)| (k, v)), false);
//! assert_eq!(w.line(b"INFO donjon: up\n"), b"INFO donjon: up service=registry\n");
//! let j = WithFields::new(fields.iter().map(|(k, v)| (k, v)), true);
//! assert_eq!(j.line(b"{\"level\":\"INFO\"}\n"), b"{\"level\":\"INFO\",\"service\":\"registry\"}\n");
//! ```

use std::io::{self, Write};

/// Writes each line to stderr with the fields added.
#[derive(Debug)]
pub struct WithFields {
    /// ` k=v k2=v2` for text lines.
    text: String,
    /// `,"k":"v","k2":"v2"` for JSON lines.
    json: String,
    is_json: bool,
}

impl WithFields {
    /// Adds `fields` to text lines, or to JSON objects when `json`.
    pub fn new<'a>(fields: impl IntoIterator<Item = (&'a String, &'a String)>, json: bool) -> Self {
        let mut text = String::new();
        let mut members = String::new();
        for (k, v) in fields {
            let quoted =
                if v.is_empty() || v.contains([' ', '"', '=']) { format!("{v:?}") } else { v.clone() };
            text.push_str(&format!(" {k}={quoted}"));
            members.push_str(&format!(
                ",{}:{}",
                serde_json::Value::from(k.as_str()),
                serde_json::Value::from(v.as_str())
            ));
        }
        Self { text, json: members, is_json: json }
    }

    /// One line as written, with the fields.
    pub fn line(&self, line: &[u8]) -> Vec<u8> {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let mut out = Vec::with_capacity(line.len() + self.text.len() + self.json.len() + 1);
        match body.strip_suffix(b"}") {
            Some(open) if self.is_json => {
                out.extend_from_slice(open);
                out.extend_from_slice(self.json.as_bytes());
                out.push(b'}');
            }
            _ => {
                out.extend_from_slice(body);
                out.extend_from_slice(self.text.as_bytes());
            }
        }
        out.push(b'\n');
        out
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for WithFields {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { buf: Vec::new(), fields: self }
    }
}

/// One event's line, written to stderr with the fields when dropped.
#[derive(Debug)]
pub struct Line<'a> {
    buf: Vec<u8>,
    fields: &'a WithFields,
}

impl Write for Line<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let _ = io::stderr().lock().write_all(&self.fields.line(&self.buf));
    }
}

//! Attacker-controlled text made safe for people: terminals and log files.
//!
//! Anything a prober sends, and anything another process appends to the journal, can reach
//! a human-facing output (`decnet tail`, `decnet attackers`, the daemon's log lines). Control
//! characters there could rewrite the screen (ESC sequences, OSC titles), hide text (CR,
//! backspace) or forge whole log lines (a newline inside a field); bidirectional overrides
//! reorder what is shown ("Trojan Source"). Each such character is shown as its `\u{..}`
//! escape instead, so the text stays readable and nothing is lost.

use std::{borrow::Cow, io};

/// Characters that must not reach a terminal or a log file as they are.
pub(crate) fn is_unsafe(c: char) -> bool {
    // C0, DEL and C1 controls.
    c.is_control()
        // Bidirectional marks, embeddings, overrides and isolates.
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every unsafe character replaced by its `\u{..}` escape (borrowed when clean).
pub(crate) fn sanitize(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A log writer that lets no field forge a line or drive a terminal: the fmt layer formats
/// each event into one buffer and writes it whole, so every unsafe character in it is
/// escaped except the newline that ends it.
pub(crate) struct SafeLines<W>(pub W);

impl<W: io::Write> io::Write for SafeLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, end) = match buf.split_last() {
            Some((b'\n', body)) => (body, "\n"),
            _ => (buf, ""),
        };
        let text = String::from_utf8_lossy(body);
        let safe = sanitize(&text);
        // One write per event keeps lines from concurrent threads whole.
        let mut line = String::with_capacity(safe.len() + 1);
        line.push_str(&safe);
        line.push_str(end);
        self.0.write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The daemon's log destination: standard error through [`SafeLines`].
pub(crate) fn stderr() -> SafeLines<io::Stderr> {
    SafeLines(io::stderr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn controls_and_bidi_overrides_are_escaped() {
        assert_eq!(sanitize("plain ü 日本"), "plain ü 日本");
        assert!(matches!(sanitize("plain"), Cow::Borrowed(_)));
        assert_eq!(sanitize("ok\u{1b}[2Jx"), "ok\\u{1b}[2Jx");
        assert_eq!(sanitize("a\rb\nc\u{7}"), "a\\u{d}b\\u{a}c\\u{7}");
        assert_eq!(sanitize("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(sanitize("exe.\u{202e}fdp"), "exe.\\u{202e}fdp");
    }

    #[test]
    fn a_log_line_cannot_forge_another() {
        let mut out = SafeLines(Vec::new());
        out.write_all(b"WARN reason=\"ip `\x1b[2J\nINFO all clear` bad\"\n")
            .unwrap();
        out.write_all(b"INFO next\n").unwrap();
        let text = String::from_utf8(out.0).unwrap();
        assert_eq!(
            text,
            "WARN reason=\"ip `\\u{1b}[2J\\u{a}INFO all clear` bad\"\nINFO next\n"
        );
        assert_eq!(text.lines().count(), 2);
    }
}

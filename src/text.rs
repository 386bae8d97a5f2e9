//! Text that reaches a terminal or a log line: control characters from the fleet repo or a
//! remote are shown escaped, so a crafted value cannot start a new line, move the cursor
//! or colour the output (and so cannot forge a line that looks like drover's own).

use std::borrow::Cow;
use std::fmt;

/// `s` with every control character escaped (`\n`, `\r`, `\t`, else `\u{1b}` style).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Displays a string with [`printable`].
#[derive(Debug, Clone, Copy)]
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&printable(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(printable("plain ünïcode"), Cow::Borrowed(_)));
        assert_eq!(
            printable("a\nb\rc\td\u{1b}[31me\u{7f}"),
            "a\\nb\\rc\\td\\u{1b}[31me\\u{7f}"
        );
        assert_eq!(Printable("x\ny").to_string(), "x\\ny");
    }
}

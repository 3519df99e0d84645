//! Text that is safe to print on a terminal, and its width in columns.
//!
//! Values from AWS (tag values above all) may hold control characters; printed raw, an escape
//! sequence in an instance's `Name` tag would drive the reader's terminal. Everything a table
//! or text report shows goes through [`clean`].

/// Control characters (C0, DEL, C1) replaced by `?`: a value from AWS never reaches the
/// terminal as an escape sequence, a newline or a tab.
pub fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// Columns a character takes in a terminal: 0 for combining marks and zero-width characters, 2
/// for East Asian wide characters and most emoji, else 1.
pub fn char_width(c: char) -> usize {
    let u = u32::from(c);
    let zero = [
        (0x0300, 0x036F),
        (0x1AB0, 0x1AFF),
        (0x1DC0, 0x1DFF),
        (0x200B, 0x200F),
        (0x20D0, 0x20FF),
        (0xFE00, 0xFE0F),
        (0xFE20, 0xFE2F),
    ];
    let wide = [
        (0x1100, 0x115F),
        (0x2E80, 0x303E),
        (0x3041, 0x33FF),
        (0x3400, 0x4DBF),
        (0x4E00, 0x9FFF),
        (0xA000, 0xA4CF),
        (0xAC00, 0xD7A3),
        (0xF900, 0xFAFF),
        (0xFE30, 0xFE4F),
        (0xFF00, 0xFF60),
        (0xFFE0, 0xFFE6),
        (0x1F300, 0x1F64F),
        (0x1F900, 0x1F9FF),
        (0x20000, 0x3FFFD),
    ];
    if zero.iter().any(|(a, b)| (*a..=*b).contains(&u)) {
        0
    } else if wide.iter().any(|(a, b)| (*a..=*b).contains(&u)) {
        2
    } else {
        1
    }
}

/// Columns a string takes.
pub fn display_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// Words of `text` on lines of at most `width` columns (a word longer than a line stands
/// alone); continuation lines start with `indent`.
pub fn wrap(text: &str, width: usize, indent: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let prefix = if lines.is_empty() { "" } else { indent };
        if !line.is_empty() && display_width(prefix) + display_width(&line) + 1 + display_width(word) > width {
            lines.push(format!("{prefix}{line}"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        let prefix = if lines.is_empty() { "" } else { indent };
        lines.push(format!("{prefix}{line}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_newlines_never_reach_the_terminal() {
        assert_eq!(clean("web\x1b[31m-1\n\t"), "web?[31m-1??");
        assert_eq!(clean("caf\u{e9} \u{1f600}"), "caf\u{e9} \u{1f600}");
    }

    #[test]
    fn wrapping_keeps_lines_within_the_width() {
        let lines = wrap("3 failed launches in eu-west-1 and us-east-1, window from a to b; nothing skipped", 30, "  ");
        assert!(lines.iter().all(|l| display_width(l) <= 30), "{lines:?}");
        assert!(lines.iter().skip(1).all(|l| l.starts_with("  ")), "{lines:?}");
        assert_eq!(wrap("", 10, ""), vec![String::new()]);
    }
}

//! Cutting text a plugin or a caller chose to a size the host keeps.

/// Cut `text` to at most `max_bytes` at a character boundary; the length it
/// had when cut, `None` when it fitted. Callers add their own mark.
pub fn truncate(text: &mut String, max_bytes: usize) -> Option<usize> {
    if text.len() <= max_bytes {
        return None;
    }
    let total = text.len();
    text.truncate(text.floor_char_boundary(max_bytes));
    Some(total)
}

/// Longest message a failure carries: a plugin's own error text, a panic
/// message or trap text is the plugin's to choose, and is returned to API
/// callers and logged, so it is held to this like output is held to its limit. Half the API's
/// message cap, so the truncation mark always reaches the caller.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 2 * 1024;

/// `message` cut to [`MAX_ERROR_MESSAGE_BYTES`] (at a character boundary),
/// marked with how long it was when it was cut.
pub fn cap_message(mut message: String) -> String {
    if let Some(total) = truncate(&mut message, MAX_ERROR_MESSAGE_BYTES) {
        message.push_str(&format!("… [truncated, {total} bytes]"));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_a_character_boundary_and_says_how_long_it_was() {
        let cases: &[(&str, usize, &str, Option<usize>)] = &[
            ("short", 10, "short", None),
            ("exactly", 7, "exactly", None),
            ("abcdef", 3, "abc", Some(6)),
            ("ééé", 3, "é", Some(6)),
            ("ééé", 4, "éé", Some(6)),
            ("x", 0, "", Some(1)),
        ];
        for (text, max, kept, total) in cases {
            let mut owned = (*text).to_owned();
            assert_eq!(truncate(&mut owned, *max), *total, "{text} at {max}");
            assert_eq!(owned, *kept, "{text} at {max}");
        }
    }
}

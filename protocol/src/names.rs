//! Display names: what a person is called in a group.
//!
//! A name is shown to everyone, so it must not be able to pass for a role or hide
//! characters. [`normalise_display_name`] returns the form the server stores and
//! shows, or says why the name is refused:
//!
//! 1. NFKC normalisation (full-width and compatibility forms fold to plain ones);
//! 2. no control, format (zero-width, bidi override) or private-use characters;
//! 3. runs of white space fold to one space, ends trimmed; 1 to
//!    [`MAX_NAME_CHARS`](crate::limits::MAX_NAME_CHARS) characters;
//! 4. no name whose confusable skeleton (Unicode TS #39), with spaces, punctuation and
//!    digits-for-letters removed, contains a role word, in any script.

use unicode_normalization::UnicodeNormalization as _;
use unicode_security::confusable_detection::skeleton;

use crate::error::ProtocolError;
use crate::limits::MAX_NAME_CHARS;

/// Words no display name may contain, however it is spelt.
pub const RESERVED_ROLE_WORDS: &[&str] = &[
    "facilitator",
    "supervisor",
    "admin",
    "moderator",
    "peerworker",
    "peerhub",
    "staff",
    "system",
];

fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
            | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
            | '\u{FE00}'..='\u{FE0E}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}'
            | '\u{E000}'..='\u{F8FF}' | '\u{E0000}'..='\u{E0FFF}'
            | '\u{F0000}'..='\u{10FFFF}')
}

/// Reduces text to a comparison form: confusable skeleton, lower case, letters only,
/// with the usual digit-for-letter swaps undone.
fn role_skeleton(text: &str) -> String {
    let lowered: String = text.to_lowercase();
    skeleton(&lowered)
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            '0' => Some('o'),
            '1' | '|' | '!' => Some('l'),
            '3' => Some('e'),
            '4' | '@' => Some('a'),
            '5' | '$' => Some('s'),
            '7' | '+' => Some('t'),
            // TS #39 maps 'i' and 'l' look-alikes to 'l' and 'rn' to 'm'; compare in
            // that space by folding both sides the same way.
            c if c.is_alphabetic() => Some(c),
            _ => None,
        })
        .map(|c| if c == 'i' { 'l' } else { c })
        .collect()
}

/// Normalises a display name or says why it is refused.
pub fn normalise_display_name(raw: &str) -> Result<String, ProtocolError> {
    let normal: String = raw.nfkc().collect();
    if let Some(c) = normal.chars().find(|&c| is_hidden(c) && !c.is_whitespace()) {
        return Err(ProtocolError::invalid(
            "name",
            format!(
                "contains a hidden or control character (U+{:04X})",
                c as u32
            ),
        ));
    }
    let folded = normal.split_whitespace().collect::<Vec<_>>().join(" ");
    let len = folded.chars().count();
    if len == 0 {
        return Err(ProtocolError::invalid("name", "a name cannot be empty"));
    }
    if len > MAX_NAME_CHARS {
        return Err(ProtocolError::TooLong {
            field: "name",
            len,
            limit: MAX_NAME_CHARS,
        });
    }
    let shape = role_skeleton(&folded);
    for word in RESERVED_ROLE_WORDS {
        if shape.contains(&role_skeleton(word)) {
            return Err(ProtocolError::invalid(
                "name",
                format!("names may not look like a role (\"{word}\")"),
            ));
        }
    }
    Ok(folded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass_and_fold_white_space() {
        assert_eq!(normalise_display_name("  River  ").unwrap(), "River");
        assert_eq!(normalise_display_name("Sam\t  K").unwrap(), "Sam K");
        assert_eq!(normalise_display_name("Zoë").unwrap(), "Zoë");
        assert_eq!(normalise_display_name("Ｋｉｍ").unwrap(), "Kim");
        assert_eq!(normalise_display_name("明").unwrap(), "明");
    }

    #[test]
    fn role_look_alikes_are_refused() {
        for name in [
            "Facilitator",
            "facilitator Jo",
            "F a c i l i t a t o r",
            "Fac1litat0r",
            "Ѕupervisor", // Cyrillic capital DZE
            "ѕuреrvіѕоr", // Cyrillic lower-case look-alikes
            "ADMIN",
            "Adm1n",
            "the_moderator",
            "Ｓｕｐｅｒｖｉｓｏｒ", // full-width
            "Peer Worker",
        ] {
            assert!(normalise_display_name(name).is_err(), "{name} was accepted");
        }
    }

    #[test]
    fn hidden_characters_and_bad_lengths_are_refused() {
        for name in [
            "a\u{200B}b",
            "x\u{202E}y",
            "bell\u{7}",
            "",
            "   ",
            "\u{FEFF}",
        ] {
            assert!(
                normalise_display_name(name).is_err(),
                "{name:?} was accepted"
            );
        }
        assert!(normalise_display_name(&"a".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(normalise_display_name(&"a".repeat(MAX_NAME_CHARS + 1)).is_err());
    }
}

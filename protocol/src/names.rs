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
//!    digits-for-letters removed, contains a role word or stem, in any script;
//! 5. no name with a word (or made of nothing but a word) that is a short staff
//!    title or a helpline number ([`RESERVED_TITLE_WORDS`], [`RESERVED_NUMBERS`]):
//!    these only as whole words, so that "Modesty" and "Steam" stay ordinary names.
//!
//! The lists below are the one place these words are kept; PROTOCOL.md §5 lists them
//! and a spec test keeps the two equal.

use unicode_normalization::UnicodeNormalization as _;
use unicode_security::confusable_detection::skeleton;

use crate::error::ProtocolError;
use crate::limits::MAX_NAME_CHARS;

/// The Unicode version of the NFKC tables behind step 1 of name normalisation
/// (PROTOCOL.md §5; `docs/FORMATS.md` states it and a test keeps them equal).
pub const NFKC_UNICODE_VERSION: (u8, u8, u8) = unicode_normalization::UNICODE_VERSION;

/// The Unicode version of the confusable data (UTS #39) behind the skeleton of
/// step 4.
pub const CONFUSABLES_UNICODE_VERSION: (u64, u64, u64) = unicode_security::UNICODE_VERSION;

/// Words and stems no display name may contain anywhere, however it is spelt
/// ("facilitat" covers facilitator, facilitation; "supervis" supervisor,
/// supervision; "counsel" counsellor and counselor).
pub const RESERVED_ROLE_WORDS: &[&str] = &[
    "facilitat",
    "supervis",
    "admin",
    "moderat",
    "peerworker",
    "peerhub",
    "staff",
    "system",
    "safeguard",
    "crisis",
    "nurse",
    "doctor",
    "counsel",
    "therapist",
    "samaritan",
    "helpline",
    "official",
    "oncall",
];

/// Short staff titles refused only as a whole word of the name, or as the whole
/// name with its spaces and punctuation removed ("M o d"): as stems they would
/// refuse ordinary names ("Modesty", "Steam", "Drew").
pub const RESERVED_TITLE_WORDS: &[&str] = &["mod", "mods", "team", "nhs", "gp", "dr"];

/// Emergency and helpline numbers refused as a whole word of the name, or as the
/// name's only digits when it has no letters ("1 1 1").
pub const RESERVED_NUMBERS: &[&str] = &["111", "999", "112", "911", "116123"];

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
    if let Some(word) = staff_like(&folded) {
        return Err(ProtocolError::invalid(
            "name",
            format!("names may not look like a role (\"{word}\")"),
        ));
    }
    Ok(folded)
}

/// The reserved word or number a (folded) name imitates, if any.
fn staff_like(folded: &str) -> Option<&'static str> {
    let shape = role_skeleton(folded);
    if let Some(word) = RESERVED_ROLE_WORDS
        .iter()
        .find(|w| shape.contains(&role_skeleton(w)))
    {
        return Some(word);
    }
    // Words: split on white space and punctuation, but not on the characters that
    // stand for letters ("Te@m", "M|d").
    let words: Vec<&str> = folded
        .split(|c: char| c.is_whitespace() || (!c.is_alphanumeric() && !"|!@$+".contains(c)))
        .filter(|w| !w.is_empty())
        .collect();
    let word_shapes: Vec<String> = words.iter().map(|w| role_skeleton(w)).collect();
    if let Some(word) = RESERVED_TITLE_WORDS.iter().find(|t| {
        let t = role_skeleton(t);
        shape == t || word_shapes.contains(&t)
    }) {
        return Some(word);
    }
    let has_letters = folded.chars().any(char::is_alphabetic);
    let digits: String = folded.chars().filter(char::is_ascii_digit).collect();
    RESERVED_NUMBERS
        .iter()
        .find(|n| words.contains(n) || (!has_letters && digits == **n))
        .copied()
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

    /// Issue 14 item 8: staff-like names passed ("Crisis Team", "Mod", ...).
    #[test]
    fn staff_like_names_and_their_look_alikes_are_refused() {
        for name in [
            "Crisis Team",
            "Safeguarding Lead",
            "Facilitation Team",
            "On-call Supervision",
            "NHS 111 Nurse",
            "Mod",
            // look-alikes: confusables, spacing, leetspeak, full-width, punctuation
            "Сrisis Теаm", // Cyrillic С, Т, е, а
            "C r i s i s",
            "Cr1s1s",
            "S4feguarding",
            "M0d",
            "M o d",
            "Ｍｏｄ",
            "the mods",
            "Te@m Jo",
            "N.H.S",
            "nhs",
            "Jo (NHS)",
            "Dr. Sam",
            "Doctor Who",
            "Nurse Ratched",
            "Counselor Kay",
            "counsellor",
            "Therapist",
            "Samaritans",
            "Samaritans listener",
            "999",
            "1 1 1",
            "Call 116123",
            "Helpline",
            "Official",
            "oncall",
            "Moderation",
            "Supervision",
            "team",
        ] {
            assert!(normalise_display_name(name).is_err(), "{name} was accepted");
        }
    }

    /// The trade-off of whole-word titles: these ordinary names must pass.
    #[test]
    fn ordinary_names_near_a_title_pass() {
        for name in [
            "Ted",
            "Teamo",
            "Steam",
            "Modesty",
            "Moda",
            "Amod",
            "Dominic",
            "Drew",
            "Andrea",
            "Admiral Ackbar",
            "Chris",
            "Christina",
            "Theo",
            "Therese",
            "Nursima",
            "Sam 2",
            "Jo 11",
            "Rose 1999",
            "Gwen",
            "Esteban",
        ] {
            assert!(
                normalise_display_name(name).is_ok(),
                "{name} was refused: {:?}",
                normalise_display_name(name)
            );
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

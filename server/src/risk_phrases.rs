//! Risk phrases: whether a message contains words that may show someone at risk, as
//! people actually type them.
//!
//! Owns the matching behind the facilitators' risk-phrase nudge (PROTOCOL.md §8.10).
//! Both the configured phrases and the message are first normalised the same way:
//!
//! - case folded (`"Can't"` → `"can't"`);
//! - apostrophes dropped, whichever a keyboard makes (`'` `’` `‘` `ʼ` `` ` `` `´` `′`),
//!   so `"can’t"`, `"can't"` and `"cant"` are one word;
//! - every other character that is not a letter or a digit is a space, and runs of
//!   spaces are one (`"self-harm"`, `"self   harm"`, `"end it all..."`);
//! - a letter repeated is one letter (`"sooo"` → `"so"`, `"diiie"` → `"die"`,
//!   `"kill"` → `"kil"`: both sides fold alike, so phrases still match).
//!
//! A phrase then matches at the start of any word of the message, word by word:
//! - a phrase word of three letters or more is a **stem**: it matches any word that
//!   starts with it (`"kil myself"` matches "killing myself", `"suicid"` matches
//!   "suicidal");
//! - a shorter phrase word must be the whole word (`"go on"` does not match "go
//!   online");
//! - the words of a phrase may run together in the message (`"self harm"` matches
//!   "selfharm", `"any more"` matches "anymore").
//!
//! The work is bounded: normalising is one pass over the message, and matching tries
//! each phrase at each word start, with at most two ways on per phrase word.
//!
//! It never decides anything about a person: a match only writes a private note to
//! the facilitators, and the message is delivered as written. Nothing here logs.

/// The phrases the hub starts with (key `escalation.risk_phrases` replaces them).
/// Written as people type them, without apostrophes; stems where a word has many
/// endings ("suicid", "overdos").
pub const DEFAULT_RISK_PHRASES: &[&str] = &[
    "kill myself",
    "end it all",
    "end my life",
    "take my own life",
    "want to die",
    "wanna die",
    "want to be dead",
    "wish i was dead",
    "wish i were dead",
    "better off dead",
    "better off without me",
    "suicid",
    "hurt myself",
    "self harm",
    "cut myself",
    "overdos",
    "no reason to live",
    "nothing to live for",
    "no point living",
    "no point in living",
    "cant go on",
    "cant do this any more",
    "cant take it any more",
    "dont want to live",
    "dont want to be here any more",
    "dont want to wake up",
];

/// Phrase words this long or longer match as stems (any word that starts with them).
const STEM_CHARS: usize = 3;

/// Characters that join the two halves of a contraction: dropped, not spaces.
fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '’' | '‘' | 'ʼ' | '`' | '´' | '′' | 'ʹ')
}

/// The normalised form described in the module docs: lower case, no apostrophes,
/// words of letters and digits separated by single spaces, no letter repeated.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last: Option<char> = None;
    for c in text.chars().flat_map(char::to_lowercase) {
        if is_apostrophe(c) {
            continue;
        }
        let c = if c.is_alphanumeric() { c } else { ' ' };
        if Some(c) == last {
            continue;
        }
        if c == ' ' && last.is_none() {
            continue;
        }
        out.push(c);
        last = Some(c);
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// The configured phrases, normalised and split into words once (at start), so
/// matching a post allocates only for the post's own text.
#[derive(Debug, Clone, Default)]
pub struct RiskPhrases {
    /// Each phrase's words; phrases with no words are dropped.
    phrases: Vec<Vec<Vec<char>>>,
}

impl RiskPhrases {
    /// Normalises `phrases` (as configured). An empty phrase matches nothing.
    pub fn new(phrases: &[String]) -> Self {
        let phrases = phrases
            .iter()
            .map(|p| {
                normalise(p)
                    .split(' ')
                    .filter(|w| !w.is_empty())
                    .map(|w| w.chars().collect::<Vec<char>>())
                    .collect::<Vec<_>>()
            })
            .filter(|words| !words.is_empty())
            .collect();
        Self { phrases }
    }

    /// Whether `text` (normalised) contains one of the phrases.
    pub fn matches(&self, text: &str) -> bool {
        if self.phrases.is_empty() {
            return false;
        }
        let text: Vec<char> = normalise(text).chars().collect();
        let starts = std::iter::once(0).chain(
            text.iter()
                .enumerate()
                .filter(|(_, c)| **c == ' ')
                .map(|(i, _)| i + 1),
        );
        for start in starts {
            for phrase in &self.phrases {
                if match_from(&text, start, phrase) {
                    return true;
                }
            }
        }
        false
    }
}

/// Whether the phrase words `phrase` match `text` from index `at` (a word start, or
/// the middle of a word when the previous phrase word ran into this one).
fn match_from(text: &[char], at: usize, phrase: &[Vec<char>]) -> bool {
    let Some((word, rest)) = phrase.split_first() else {
        return true;
    };
    if !text.get(at..).is_some_and(|t| t.starts_with(word)) {
        return false;
    }
    let end = at + word.len();
    let word_ends = |i: usize| i >= text.len() || text[i] == ' ';
    // The message's word ends here, or (for a stem) where the word ends.
    let mut to = None;
    if word_ends(end) {
        to = Some(end);
    } else if word.len() >= STEM_CHARS {
        let mut i = end;
        while !word_ends(i) {
            i += 1;
        }
        to = Some(i);
    }
    if let Some(to) = to {
        if rest.is_empty() || (to < text.len() && match_from(text, to + 1, rest)) {
            return true;
        }
    }
    // The next phrase word runs on in the same message word ("selfharm").
    !rest.is_empty() && !word_ends(end) && match_from(text, end, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains_risk_phrase(phrases: &[String], text: &str) -> bool {
        RiskPhrases::new(phrases).matches(text)
    }

    fn defaults() -> Vec<String> {
        DEFAULT_RISK_PHRASES
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn nudges(text: &str) -> bool {
        contains_risk_phrase(&defaults(), text)
    }

    #[test]
    fn normalising_folds_case_apostrophes_punctuation_spacing_and_repeats() {
        assert_eq!(normalise("I Can’t GO on..."), "i cant go on");
        assert_eq!(normalise("can't  go\ton"), "cant go on");
        assert_eq!(normalise("can‘t"), "cant");
        assert_eq!(normalise("canʼt"), "cant");
        assert_eq!(normalise("sooo  tired!!!"), "so tired");
        assert_eq!(normalise("self-harm"), "self harm");
        assert_eq!(normalise("  kill   myself  "), "kil myself");
        assert_eq!(normalise(""), "");
    }

    #[test]
    fn the_issues_phrasings_are_caught() {
        for text in [
            "I can’t go on",          // the curly apostrophe phones type
            "i can't go on",          // the straight one
            "i cant go on anymore",   // no apostrophe
            "I CAN'T GO ON",          // capitals
            "i cannn't go onnn",      // repeated letters
            "can't   go   on",        // spacing
            "I just... can't go on.", // punctuation
        ] {
            assert!(nudges(text), "{text:?} should nudge");
        }
    }

    #[test]
    fn common_phrasings_are_caught() {
        for text in [
            "i want to kill myself",
            "thinking about killing myself",
            "I'm going to end it all tonight",
            "i'm thinking of ending it all", // "end" is a stem
            "i just want to die",
            "honestly i wanna die",
            "I've been feeling suicidal",
            "had suicidal thoughts again",
            "I've been self-harming again",
            "i selfharm when it gets bad",
            "I hurt myself last night",
            "i keep hurting myself",
            "I took an overdose once",
            "thought about overdosing",
            "there's no reason to live",
            "I have nothing to live for",
            "they'd all be better off without me",
            "I can't take it anymore",
            "i cant do this any more",
            "i don’t want to be here anymore",
            "I dont want to wake up tomorrow",
            "Sometimes I wish I was dead",
            "i want to take my own life",
        ] {
            assert!(nudges(text), "{text:?} should nudge");
        }
    }

    #[test]
    fn ordinary_words_that_share_letters_are_not_caught() {
        for text in [
            "",
            "Hello everyone, first time here.",
            "I can go on about this for ages",
            "can't go online at work",
            "my dad's suit is too big",
            "the skill of being kind to myself",
            "it's the end of it all, the week I mean",
            "I went for a walk and feel better",
            "we killed it at the quiz",
            "self care matters",
            "cantankerous cat went on a walk",
        ] {
            assert!(!nudges(text), "{text:?} should not nudge");
        }
    }

    #[test]
    fn a_stem_matches_longer_words_and_a_short_word_only_itself() {
        let phrases = vec!["want to die".to_string()];
        // Stems match longer words; "dying" would need its own phrase.
        assert!(contains_risk_phrase(&phrases, "I want to die"));
        assert!(contains_risk_phrase(&phrases, "wanted to die"));
        assert!(!contains_risk_phrase(&phrases, "want a dinner"));
        // The price of stems, said plainly: a harmless extra note to facilitators.
        assert!(contains_risk_phrase(&phrases, "I want to diet"));
        let phrases = vec!["go on".to_string()];
        assert!(contains_risk_phrase(&phrases, "i cant go on"));
        assert!(!contains_risk_phrase(&phrases, "go online"));
    }

    #[test]
    fn a_phrase_starts_at_a_word_start_only() {
        let phrases = vec!["harm".to_string()];
        assert!(contains_risk_phrase(&phrases, "harmful"));
        assert!(!contains_risk_phrase(&phrases, "pharmacy"));
        assert!(!contains_risk_phrase(&phrases, "charm"));
    }

    #[test]
    fn configured_phrases_are_normalised_like_messages() {
        let phrases = vec!["  Can’t COPE ".to_string()];
        assert!(contains_risk_phrase(&phrases, "i cant cope"));
        assert!(contains_risk_phrase(&phrases, "I can't cope!!"));
        assert!(!contains_risk_phrase(&phrases, "i can cope"));
    }

    #[test]
    fn no_phrases_or_empty_phrases_match_nothing() {
        assert!(!contains_risk_phrase(&[], "i want to die"));
        assert!(!contains_risk_phrase(
            &[String::new(), "...".into()],
            "i want to die"
        ));
    }

    #[test]
    fn long_messages_are_handled() {
        let long = "la ".repeat(2000) + "i cant go on";
        assert!(nudges(&long));
        assert!(!nudges(&"aaaa ".repeat(2000)));
    }
}

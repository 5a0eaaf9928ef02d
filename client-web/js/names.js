// Display names (pseudonyms), checked before signing.
//
// The server is the authority (protocol/src/names.rs): it refuses a join whose signed
// name is not already in normalised form, or that hides characters or looks like a
// role. This module mirrors those rules so a person hears about a problem before
// anything is sent, and so the name we sign is the normalised one:
//
//   1. NFKC normalisation;
//   2. no control, format (zero-width, bidi) or private-use characters;
//   3. runs of white space fold to one space, ends trimmed; 1..=maxChars characters;
//   4. no role word or stem ("facilitat", "crisis", "nurse", ...) hidden in the name,
//      no staff title ("mod", "team", "NHS", ...) or helpline number ("111", "999")
//      as a word of it (the lists are those of names.rs and PROTOCOL.md §5).
//
// Rule 4 here is a close approximation: the server also folds Unicode look-alikes
// (TS #39 skeletons), which a browser cannot do without a large table. The client
// never refuses a name the server would accept for an ASCII spelling, and anything
// it misses the server still refuses.

import { scalarLength } from "./encoding.js";

export const DEFAULT_MAX_NAME_CHARS = 32;

const RESERVED_ROLE_WORDS = [
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
const RESERVED_TITLE_WORDS = ["mod", "mods", "team", "nhs", "gp", "dr"];
const RESERVED_NUMBERS = ["111", "999", "112", "911", "116123"];
const WORD_SPLIT = /[^\p{L}\p{N}|!@$+]+/u;

// Same set as names.rs `is_hidden` (control characters plus listed format, filler and
// private-use ranges).
const HIDDEN =
  /[\p{Cc}\u00AD\u034F\u061C\u115F\u1160\u17B4\u17B5\u180B-\u180F\u200B-\u200F\u2028-\u202E\u2060-\u206F\u3164\uFE00-\uFE0E\uFEFF\uFFA0\uFFF0-\uFFFB\uE000-\uF8FF\u{E0000}-\u{E0FFF}\u{F0000}-\u{10FFFF}]/u;
const WHITE_SPACE = /^\p{White_Space}$/u;
const WHITE_SPACE_RUN = /\p{White_Space}+/u;
const LETTER = /^\p{Alphabetic}$/u;

const DIGIT_SWAPS = { 0: "o", 1: "l", "|": "l", "!": "l", 3: "e", 4: "a", "@": "a", 5: "s", $: "s", 7: "t", "+": "t" };

function roleShape(text) {
  let out = "";
  for (const ch of text.toLowerCase()) {
    const swapped = DIGIT_SWAPS[ch];
    if (swapped) {
      out += swapped;
    } else if (LETTER.test(ch)) {
      out += ch === "i" ? "l" : ch;
    }
  }
  return out;
}

const ROLE_SHAPES = RESERVED_ROLE_WORDS.map((word) => [word, roleShape(word)]);

/**
 * Normalises a name or explains why it cannot be used.
 * Returns { ok: true, name } or { ok: false, reason } with a sentence for a person.
 */
export function normaliseDisplayName(raw, maxChars = DEFAULT_MAX_NAME_CHARS) {
  const normal = String(raw).normalize("NFKC");
  for (const ch of normal) {
    if (HIDDEN.test(ch) && !WHITE_SPACE.test(ch)) {
      return {
        ok: false,
        reason: "Your name contains an invisible or control character. Please retype it.",
      };
    }
  }
  const folded = normal.split(WHITE_SPACE_RUN).filter((part) => part !== "").join(" ");
  const length = scalarLength(folded);
  if (length === 0) {
    return { ok: false, reason: "Please choose a name. It can be anything you like." };
  }
  if (length > maxChars) {
    return {
      ok: false,
      reason: `That name is ${length} characters long. Please keep it to ${maxChars} or fewer.`,
    };
  }
  const shape = roleShape(folded);
  const refuse = (word) => ({
    ok: false,
    reason: `Names can't look like staff or a service (this one reads as "${word}"), so nobody is misled. Please choose another name.`,
  });
  for (const [word, wordShape] of ROLE_SHAPES) {
    if (shape.includes(wordShape)) {
      return refuse(word);
    }
  }
  const words = folded.split(WORD_SPLIT).filter((w) => w !== "");
  const wordShapes = words.map(roleShape);
  for (const title of RESERVED_TITLE_WORDS) {
    const t = roleShape(title);
    if (shape === t || wordShapes.includes(t)) {
      return refuse(title);
    }
  }
  const hasLetters = /\p{Alphabetic}/u.test(folded);
  const digits = folded.replace(/[^0-9]/g, "");
  for (const n of RESERVED_NUMBERS) {
    if (words.includes(n) || (!hasLetters && digits === n)) {
      return refuse(n);
    }
  }
  return { ok: true, name: folded };
}

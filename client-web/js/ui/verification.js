// How verification shows: the verified mark, the unverified warning and its reasons.
//
// Owns: these words and elements, so every screen marks trust the same way. A mark is
// always words plus a symbol (never colour alone).

import { h } from "./dom.js";

const REASONS = {
  bad_signature:
    "Its signature doesn't match, so we can't be sure who wrote it or that it wasn't changed.",
  wrong_group: "It was signed for a different group, so it may have been copied here.",
  wrong_kind: "It was signed for a different purpose, so it may have been copied here.",
  wrong_key: "It was signed by a different key from the person it is shown as.",
  bad_payload: "It isn't in a form this app can check.",
  malformed: "It isn't in a form this app can check.",
  name_mismatch: "The name shown isn't the name this person signed.",
  stale_counter:
    "It came after newer messages from the same person, but was written before them, so it may be an old message sent again.",
  time_far:
    "It was written at a very different time from when it is said to have arrived, so it may be an old message sent again.",
  duplicate: "It reuses the counter of an earlier message from the same key, which the server never accepts, so it may be a copy.",
  wrong_channel:
    "It was signed for a different conversation (the group, a private check-in, or the facilitators' channel), so it may have been moved here.",
  changed: "It came again with the same number but different contents, so it may have been changed.",
  wrong_record: "It was signed for a different record, or for a different place in this one.",
  wrong_subject: "It was signed about a different person from the one this escalation is about.",
  wrong_escalation: "It was signed for a different escalation, or for a different step.",
};

/** A sentence saying why something is unverified. */
export function unverifiedReason(reason) {
  return REASONS[reason] ?? "We couldn't check who this came from.";
}

/** The small "Verified" mark. */
export function verifiedMark(what = "message") {
  return h(
    "span",
    { className: "mark mark-ok", attrs: { title: `Signature checked: this ${what} is from the key shown and was not changed.` } },
    h("span", { attrs: { "aria-hidden": "true" }, text: "✓ " }),
    "Verified",
  );
}

/** The plain, visible "Unverified" mark. */
export function unverifiedMark() {
  return h(
    "span",
    { className: "mark mark-bad" },
    h("span", { attrs: { "aria-hidden": "true" }, text: "⚠ " }),
    "Unverified",
  );
}

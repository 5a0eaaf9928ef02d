// How people are named in sentences: "you", a verified pseudonym, or a plain
// "someone" when the name can't be trusted or isn't known.
//
// Owns: these words. A name whose signed join did not verify is never used as if it
// were trusted, and keys never appear in a sentence: "Jo let someone in", not "Jo let
// someone (key 7dRu) in". Keys live on the "About this device" card only.

import { roleLabel } from "./dom.js";

/**
 * A name for `key` in a sentence. `session` gives members; `capital` starts the
 * sentence ("You" / "Someone").
 */
export function who(session, key, { capital = false } = {}) {
  if (key && key === session.identity.publicKey) {
    return capital ? "You" : "you";
  }
  const member = key ? session.member(key) : null;
  if (member?.verified) {
    return member.name;
  }
  return capital ? "Someone" : "someone";
}

/** A facilitator's name, or "a facilitator" when we can't see who they are. */
export function facilitatorName(session, key, { capital = false } = {}) {
  const member = key ? session.member(key) : null;
  if (member?.verified) {
    return member.name;
  }
  return capital ? "A facilitator" : "a facilitator";
}

/** The roles worth saying beside a name: "facilitator", "supervisor"… (none for members). */
export function rolesOf(session, key) {
  const member = key ? session.member(key) : null;
  const roles = new Set(member?.verified ? (member.roles ?? []) : []);
  if (session.isFacilitator(key)) {
    roles.add("facilitator");
  }
  return [...roles].filter((r) => r !== "member");
}

/** How a screen reader names a message's writer: "Jo, facilitator" — nothing else. */
export function spokenAuthor(session, key) {
  if (key && key === session.identity.publicKey) {
    return "You";
  }
  const name = who(session, key, { capital: true });
  const roles = rolesOf(session, key).map((r) => roleLabel(r).toLowerCase());
  return roles.length ? `${name}, ${roles.join(", ")}` : name;
}

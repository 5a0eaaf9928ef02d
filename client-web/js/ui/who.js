// How people are named in sentences: "you", a verified pseudonym, or a plain
// "someone (key abcd)" when the name can't be trusted or isn't known.
//
// Owns: these words. A name whose signed join did not verify is never used as if it
// were trusted: it is quoted and marked.

import { shortTag } from "../encoding.js";

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
  const tag = key ? ` (key ${shortTag(key)})` : "";
  if (member) {
    return `${capital ? "Someone" : "someone"} calling themselves “${member.name}”, name not verified${tag}`;
  }
  return `${capital ? "Someone" : "someone"}${tag}`;
}

/** A facilitator's name, or "a facilitator" when we can't see who they are. */
export function facilitatorName(session, key, { capital = false } = {}) {
  const member = key ? session.member(key) : null;
  if (member?.verified) {
    return member.name;
  }
  return capital ? "A facilitator" : "a facilitator";
}

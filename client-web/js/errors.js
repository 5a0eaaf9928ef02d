// Every error a person might see, in words they can act on: the one table.
//
// Server codes are the stable strings of protocol/src/error.rs (`ErrorCode`); each one
// has a sentence here. A code this version does not know gets the generic sentence
// (error.rs promises new codes may be added). Codes marked "local" are raised by the
// client itself and never sent by the server.
//
// Owns: wording. Never decides what to do about an error (retrying is the caller's
// business) and never shows the server's own message as the main text.

import { durationWords, formatDateTime } from "./time-words.js";

const SENTENCES = {
  // ---- server codes (error.rs) ----
  malformed:
    "This app sent something the server couldn't read, so nothing was changed. Reloading the page usually fixes it.",
  unknown_type:
    "The server didn't recognise a request from this app. The app may be out of date: please reload the page.",
  too_large: "That is too big to send in one go. Please split it into shorter messages.",
  body_too_long: "That is longer than allowed. Please shorten it and try again.",
  not_authenticated:
    "You aren't signed in on this connection yet. Please wait a moment and try again.",
  auth_failed: "Signing in didn't work. The app will try again by itself.",
  already_authenticated: "You are already signed in.",
  bad_key: "The server didn't accept this browser's key. Please reload the page.",
  bad_signature:
    "The server couldn't check this browser's signature, so nothing was changed. Please try again.",
  wrong_kind:
    "This app prepared a request the wrong way, so nothing was changed. Please reload the page.",
  wrong_key:
    "This request was signed with a different key from the one you signed in with. Please reload the page.",
  wrong_group:
    "This request was aimed at a different group, so nothing was changed. Please reload the page.",
  replay: "That request had already been used, so the server ignored the copy. Please try again.",
  stale:
    "Your device's clock looks wrong, so the server didn't accept that. Please check the date and time settings, then try again.",
  invalid: "Something in that isn't allowed. Please check it and try again.",
  forbidden: "You don't have permission to do that.",
  not_found: "We couldn't find that. It may have gone, or the link may be wrong.",
  already_exists: "A group with that id already exists. Please choose another id.",
  not_joined: "You aren't in this group on this connection. Rejoining…",
  bad_token:
    "This invite link has been used already, has expired, or isn't valid. Please ask the person who sent it for a new one.",
  closed: "The group isn't open right now.",
  locked: "The group is locked at the moment: nobody new can come in. Please try again a little later.",
  access_denied:
    "This group needs an access code or an invite. Please check the code you were given, or ask the person who sent the link.",
  agreement_required: "Please read the group agreement and agree to it before writing.",
  waiting: "You're still in the waiting room. A facilitator will let you in soon.",
  muted:
    "A facilitator has muted you for a while, so you can't write to the group just now. You can still write privately to a facilitator.",
  paused:
    "The conversation is paused: only facilitators can write for now. You can still write privately to a facilitator.",
  slow_mode: "Slow mode is on, so there is a short wait between your messages.",
  removed: "A facilitator has taken you out of this group. You can still get help from the helplines.",
  taken: "Someone else has already taken this on.",
  full: "This group is full at the moment. Please try again a little later.",
  waiting_room_full:
    "The waiting room is full at the moment. Please try again a little later, or use the helplines if you need support now.",
  rate_limited: "That was a little fast. Please wait a moment before trying again.",
  shutting_down: "The server is restarting. You'll be reconnected automatically.",
  internal: "Something went wrong on the server, and nothing was changed. Please try again.",
  storage_unavailable: "The server couldn't save that just now, so nothing was changed. Please try again in a moment.",

  // ---- local codes (raised by this client) ----
  disconnected:
    "The connection dropped before the server answered. It will be tried again when you are reconnected.",
  not_connected: "You're offline at the moment. This will be sent when the connection is back.",
  closed_policy:
    "The server closed the connection because something this app sent wasn't accepted. Use “Reconnect” to try again; if it keeps happening, please reload the page.",
  closed_too_big: "The server closed the connection because something sent was far too big. Use “Reconnect” to try again.",
  protocol_version:
    "This server speaks a different version of peerhub. Please reload the page; if that doesn't help, the service may be updating.",
  no_ed25519:
    "This browser can't create the signing key peerhub needs. Please update your browser, or try a recent Firefox, Chrome, Edge or Safari.",
  insecure_context:
    "This page must be opened over a secure connection (https) to create your key. Please check the link.",
  empty_body: "Please write something before sending.",
  empty_title: "Please give the group a title.",
  invalid_group_id:
    "A group id uses only lower-case letters a–z, digits and '-', up to 32 characters, and can't start with '-'.",
  send_failed: "Your message couldn't be sent.",
  group_not_found: "We couldn't find that group. Please check the link or the group name.",
  empty_text: "Please write something first.",
  empty_reason: "Please give a reason. Everyone in the group will see it.",
  empty_access_code: "Please type the access code you were given.",
  passphrase_needed: "This group is locked on this device. Type the passphrase you chose for it.",
  passphrase_wrong: "That passphrase doesn't open this group on this device. Try again.",
  passphrase_short: "Choose a passphrase of at least 8 characters.",
  invalid_minutes: "Please choose between 1 and 1440 minutes (one day).",
  invalid_seconds: "Please choose between 0 and 3600 seconds (0 turns slow mode off).",
  invalid_schedule: "Each time needs a start and an end, and the end must come after the start.",
  invalid_days: "Please give a whole number of days, 1 or more.",
  no_lead:
    "No facilitator has arrived yet, so there is nobody to write to privately. The helplines below are there now.",
  not_in_group: "This needs you to be in the group. Please join it again.",
  empty_flag_reason: "Please say why. The supervisor needs it to act on this.",
  empty_note: "Please write the note first.",
  empty_outcome: "Please say how it ended: the outcome is kept with the escalation.",
  no_handover_target: "Please choose the supervisor to hand it over to.",
  invalid_key:
    "That isn't a whole key. Please paste the supervisor's full key, as shown under “About this device” on their start screen or in their console.",
  invalid_window: "Please give a start and an end, with the end after the start.",
  too_many_rota_entries: "A rota can have at most 1,000 entries.",
  no_lead_here: "This group has no lead facilitator at the moment, so there is nobody to write to there yet.",
  no_supervisor_name: "Please choose the name people will see before joining a group.",
  notifications_unsupported: "This browser can't show notifications. The sound and this page will still tell you.",
  notifications_denied:
    "Notifications are blocked for this site. You can allow them in the browser's site settings; the sound and this page will still tell you.",
};

const GENERIC = "Something went wrong, and nothing was changed. Please try again.";

/** The sentence for an error code (server or local); never empty. */
export function sentenceFor(code) {
  return Object.hasOwn(SENTENCES, code) ? SENTENCES[code] : GENERIC;
}

// Codes where the server's own message names the detail a person needs (which field,
// which limit, why a facilitator action was refused, the removal reason).
const WITH_DETAILS = new Set(["invalid", "body_too_long", "not_found", "forbidden", "removed"]);

/**
 * The sentence for an `error` frame. For the codes in WITH_DETAILS the server's own
 * message is appended as "Details: …". Waits are given in words; `closed` gives the
 * next opening in local time when the server names one.
 */
export function describeErrorFrame(frame) {
  const code = typeof frame?.code === "string" ? frame.code : "";
  let text = sentenceFor(code);
  const wait = Number.isFinite(frame?.retry_after_ms) ? frame.retry_after_ms : null;
  if (code === "rate_limited" && wait !== null) {
    text += ` (about ${durationWords(wait)})`;
  }
  if ((code === "muted" || code === "slow_mode") && wait !== null) {
    text += ` You can write to the group again in ${durationWords(wait)}.`;
  }
  if (code === "closed") {
    text += Number.isFinite(frame?.next_session_ms)
      ? ` The next session opens ${formatDateTime(frame.next_session_ms)}.`
      : " No next session is scheduled yet.";
  }
  if (WITH_DETAILS.has(code) && typeof frame?.message === "string" && frame.message) {
    text += ` Details: ${frame.message.slice(0, 200)}`;
  }
  return text;
}

/** Every server code this table covers, for checks against error.rs. */
export const SERVER_CODES = Object.freeze(
  Object.keys(SENTENCES).slice(0, Object.keys(SENTENCES).indexOf("disconnected")),
);

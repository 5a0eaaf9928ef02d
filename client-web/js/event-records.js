// Event frames of every channel, turned into verified records.
//
// Data flow:
//   event frame ─► channel string ─► verifyEnvelope (strict, group) ─► channel rules
//              ─► (key, counter) seen before? ─► record { verified, reason, ... }
//
// A record says what the browser could check, never more:
//   - a person's envelope: `verified` true only if the signature, the payload's group,
//     its shape and the channel's rules all hold, and its (key, counter) is new;
//   - a hub note (no envelope): `from: "hub"`, never shown as a person's words;
//   - a redaction: the hub's claim (`redacted`) is kept as `redaction`, and is only
//     `confirmed` once the facilitator's own signed `redact` control is found in the
//     conversation (see GroupSession.confirmRedaction).
//
// Channel rules (groups semantics, "Channels and events"):
//   main  — posts without `to`, and controls other than decline and check_in;
//   staff — reports, declines, and hub notes;
//   pair  — posts between its two keys (`to` = the other one), and the check_in that
//           opened it, signed by one of the two about the other.
//
// Owns: the counters seen per key. Never touches the DOM and keeps no log (the
// session does).

import { Kind, MAIN, pairKeys, STAFF, verifyEnvelope } from "./protocol.js";
import { SIGNED_TIME_TOLERANCE_MS } from "./seen-counters.js";

const isCount = (v) => Number.isSafeInteger(v) && v >= 0;
const isKey = (v) => typeof v === "string" && v !== "";

/** The hub's note, if it has a shape this version knows; else { note: "unknown" }. */
export function readNote(note) {
  if (note === null || typeof note !== "object" || typeof note.note !== "string") {
    return null;
  }
  if (note.note === "risk_nudge" && isKey(note.member) && isCount(note.seq)) {
    return {
      note: "risk_nudge",
      member: note.member,
      seq: note.seq,
      suggestion: typeof note.suggestion === "string" ? note.suggestion : "",
    };
  }
  if (note.note === "mute_ended" && isKey(note.member)) {
    return { note: "mute_ended", member: note.member };
  }
  const SEVERITIES = ["concern", "urgent", "emergency"];
  if (note.note === "support_asked" && isKey(note.member) && SEVERITIES.includes(note.severity)) {
    return {
      note: "support_asked",
      member: note.member,
      severity: note.severity,
      own: note.own === true,
      flags: isCount(note.flags) ? note.flags : 1,
      withheld: note.withheld === true,
      words: typeof note.words === "string" && note.words !== "" ? note.words : null,
    };
  }
  if (note.note === "support_resolved" && isKey(note.member)) {
    return { note: "support_resolved", member: note.member };
  }
  return { note: "unknown" };
}

/** The hub's redaction claim, or null. */
export function readRedaction(redacted) {
  if (
    redacted === null ||
    typeof redacted !== "object" ||
    !isKey(redacted.by) ||
    typeof redacted.reason !== "string" ||
    !isCount(redacted.control_seq)
  ) {
    return null;
  }
  return { by: redacted.by, reason: redacted.reason, controlSeq: redacted.control_seq, confirmed: false };
}

/** Whether a verified envelope belongs in this channel; returns a reason if not. */
export function channelProblem(channel, kind, payload, key) {
  const action = payload?.action?.do;
  if (channel === MAIN) {
    if (kind === Kind.POST) {
      return payload.to === undefined ? null : "wrong_channel";
    }
    if (kind === Kind.CONTROL) {
      return action === "decline" || action === "check_in" || action === "clear_waiting" ? "wrong_channel" : null;
    }
    return "wrong_channel";
  }
  if (channel === STAFF) {
    if (kind === Kind.REPORT) {
      return null;
    }
    return kind === Kind.CONTROL && (action === "decline" || action === "clear_waiting") ? null : "wrong_channel";
  }
  const keys = pairKeys(channel);
  if (!keys || !keys.includes(key)) {
    return "wrong_channel";
  }
  const other = keys[0] === key ? keys[1] : keys[0];
  if (kind === Kind.POST) {
    return payload.to === other ? null : "wrong_channel";
  }
  if (kind === Kind.CONTROL && action === "check_in") {
    return payload.action.member === other ? null : "wrong_channel";
  }
  return "wrong_channel";
}

export class EventReader {
  /** `me`: our public key; `groupId`: the group every payload must name. */
  constructor({ groupId, me, seen = null }) {
    this.groupId = groupId;
    this.me = me;
    // The highest counters seen before this page (seen-counters.js), or null.
    this.seen = seen;
    // key -> Set of counters in verified envelopes. The server never accepts a
    // counter twice from one key, so a second envelope with the same pair is a copy.
    this.countersSeen = new Map();
  }

  /**
   * Verifies an event frame of `channel`; resolves a record. `repeat`: the frame
   * re-sends a seq already held (a redaction), so its counter was counted already.
   */
  async read(frame, channel, { repeat = false } = {}) {
    const base = {
      channel,
      seq: frame.seq,
      ts: Number.isFinite(frame.ts) ? frame.ts : null,
      redaction: readRedaction(frame.redacted),
      delivery: null,
    };
    if (frame.env === undefined || frame.env === null) {
      if (base.redaction) {
        // A removed message, sent without its text to someone who is not a
        // facilitator. Only the hub says so until the signed control is found.
        return { ...base, from: "hub", kind: "removed", key: "", verified: false, reason: "removed", payload: null, rawPayload: "", self: false };
      }
      return { ...base, from: "hub", kind: "note", note: readNote(frame.note), key: "", verified: false, reason: "hub", payload: null, rawPayload: "", self: false };
    }
    const env = frame.env;
    if (this.seen) {
      await this.seen.ready;
    }
    const check = await verifyEnvelope(env, { group: this.groupId });
    if (check.verified) {
      const problem = channelProblem(channel, env.kind, check.payload, env.key);
      if (problem) {
        check.verified = false;
        check.reason = problem;
      }
    }
    if (check.verified && !repeat) {
      let seen = this.countersSeen.get(env.key);
      if (!seen) {
        seen = new Set();
        this.countersSeen.set(env.key, seen);
      }
      if (seen.has(check.payload.counter)) {
        check.verified = false;
        check.reason = "duplicate";
      } else {
        seen.add(check.payload.counter);
      }
    }
    if (check.verified && base.ts !== null && Math.abs(check.payload.ts - base.ts) > SIGNED_TIME_TOLERANCE_MS) {
      // Signed long before (or after) the hub says it arrived: an old message
      // presented as new, or a misdated one.
      check.verified = false;
      check.reason = "time_far";
    }
    if (check.verified && !repeat && this.seen && Number.isSafeInteger(frame.seq)) {
      if (!this.seen.check(channel, env.key, frame.seq, check.payload.counter)) {
        check.verified = false;
        check.reason = "stale_counter";
      }
    }
    return {
      ...base,
      // The time shown is the one its writer signed; the hub's is kept beside it.
      ts: check.verified ? check.payload.ts : base.ts,
      hubTs: base.ts,
      from: "person",
      kind: typeof env.kind === "string" ? env.kind : "unknown",
      key: typeof env.key === "string" ? env.key : "",
      verified: check.verified,
      reason: check.reason,
      // Only read from when verified is true; kept otherwise so the person can choose
      // to look at it, clearly marked.
      payload: check.payload ?? null,
      rawPayload: typeof env.payload === "string" ? env.payload : "",
      self: env.key === this.me,
    };
  }
}

// The wire contract, as the browser speaks it (mirror of protocol/src).
//
// Owns: the signing bytes, envelope signing and verification, payload and frame
// shapes, and the client-side checks of ids and lengths. Knows nothing about sockets
// (connection.js), storage (store.js) or the page (ui/).
//
// Signing: "peerhub/1/" + kind + "\n" + payload, as UTF-8, where payload is the exact
// JSON string carried in `env.payload`. There is no canonical JSON: we sign the string
// we send and verify the string we receive, byte for byte.

import { scalarLength, toBase64Url, utf8, wellFormed } from "./encoding.js";
import { signBytes, verifyBytes } from "./keys.js";

export const PROTOCOL_VERSION = 1;

/** Envelope kinds this client knows (envelope.rs `Kind`). */
export const Kind = Object.freeze({
  AUTH: "auth",
  REDEEM: "redeem",
  CREATE_GROUP: "create_group",
  JOIN: "join",
  POST: "post",
  INVITE: "invite",
  AGREE: "agree",
  CONTROL: "control",
  REPORT: "report",
  STEP_OUT: "step_out",
  RECORD: "record",
  FLAG: "flag",
  ESCALATION: "escalation",
  ROTA: "rota",
  PUSH: "push",
  GRANT: "grant",
});

/** Roles a key can hold (frame.rs `Role`). */
export const ROLES = Object.freeze(["admin", "facilitator", "supervisor"]);

/** Roles an invite can grant (payload.rs `InviteRole`); `member` opens one virtual group. */
export const INVITE_ROLES = Object.freeze(["admin", "facilitator", "supervisor", "member"]);

/** Where a member stands in a group (frame.rs `MemberStatus`). */
export const MemberStatus = Object.freeze({
  NEEDS_AGREEMENT: "needs_agreement",
  WAITING: "waiting",
  ADMITTED: "admitted",
  DECLINED: "declined",
  REMOVED: "removed",
});

/** Why the server took someone out of a group (`dismissed.reason`). */
export const DismissReason = Object.freeze({
  DECLINED: "declined",
  REMOVED: "removed",
  SESSION_ENDED: "session_ended",
  WAITING_CLEARED: "waiting_cleared",
  GRANT_REVOKED: "grant_revoked",
});

/** Group kinds (payload.rs `GroupKind`). */
export const GROUP_KINDS = Object.freeze(["drop_in", "virtual"]);

/** Limits used until the server's `hello` announces its own (limits.rs). */
export const DEFAULT_LIMITS = Object.freeze({
  max_frame_bytes: 16 * 1024,
  max_body_chars: 4000,
  max_name_chars: 32,
  max_title_chars: 80,
  max_clock_skew_ms: 120_000,
  max_text_chars: 4000,
});

export const MAX_TITLE_CHARS = 80;
/** Longest access code (server: create_group checks). */
export const MAX_ACCESS_CODE_CHARS = 64;
/** Most session windows in a schedule. */
export const MAX_SCHEDULE_WINDOWS = 500;
/** Mute length, in minutes (controls.rs). */
export const MAX_MUTE_MINUTES = 24 * 60;
/** Slow mode, in seconds between one member's messages (controls.rs). */
export const MAX_SLOW_MODE_SECS = 3600;
/** Most pinned messages at once (controls.rs). */
export const MAX_PINS = 10;
/** Invite validity: default and longest (server invites.rs). */
export const DEFAULT_INVITE_TTL_MS = 24 * 60 * 60 * 1000;
export const MAX_INVITE_TTL_MS = 30 * 24 * 60 * 60 * 1000;
/** Events the server replays on a join without `after`. */
export const HISTORY_ON_JOIN = 100;
export const MAX_GROUP_ID_LEN = 32;
const GROUP_ID = /^[a-z0-9][a-z0-9-]{0,31}$/;

// Kinds whose payload names a group that must match the group it arrived in.
const GROUP_SCOPED = new Set([
  Kind.CREATE_GROUP,
  Kind.JOIN,
  Kind.POST,
  Kind.AGREE,
  Kind.CONTROL,
  Kind.REPORT,
  Kind.STEP_OUT,
  Kind.RECORD,
  Kind.FLAG,
]);

/** The exact bytes a signature covers. */
export function signingBytes(kind, payload) {
  return utf8(`peerhub/${PROTOCOL_VERSION}/${kind}\n${payload}`);
}

/**
 * Serialises `payloadObject` once and signs that very string. Strings in the payload
 * must already be well formed (see `wellFormed`), or the server cannot parse it.
 */
export async function signEnvelope(identity, kind, payloadObject) {
  const payload = JSON.stringify(payloadObject);
  const sig = await signBytes(identity.keyPair, signingBytes(kind, payload));
  return { kind, key: identity.publicKey, payload, sig: toBase64Url(sig) };
}

// ---- payloads (field order follows payload.rs; it does not matter to the server) ----

export function authPayload(challenge, ts) {
  return { challenge, ts };
}

/** `name` (staff invites only): the normalised name colleagues know the redeemer by. */
export function redeemPayload(token, counter, ts, name = null) {
  return name ? { token, name: wellFormed(name), counter, ts } : { token, counter, ts };
}

/**
 * `settings` (all optional): agreement (text), accessCode (text), schedule
 * ([{ start_ms, end_ms }]), retention ({ ephemeral, history_days? }), waitingRoom (bool).
 * Absent settings are left out, so the server's defaults apply. The access code is
 * NOT in the signed payload (the server keeps the signed request and refuses one that
 * holds a code): it travels beside it, see `createGroupFrameFields`.
 */
export function createGroupPayload(group, title, groupKind, settings, counter, ts) {
  const payload = { group, title: wellFormed(title), group_kind: groupKind };
  if (settings.agreement) {
    payload.agreement = wellFormed(settings.agreement);
  }
  if (settings.schedule?.length) {
    payload.schedule = settings.schedule.map((w) => ({ start_ms: w.start_ms, end_ms: w.end_ms }));
  }
  if (settings.retention) {
    payload.retention = { ephemeral: settings.retention.ephemeral === true };
    if (Number.isSafeInteger(settings.retention.history_days)) {
      payload.retention.history_days = settings.retention.history_days;
    }
  }
  if (typeof settings.waitingRoom === "boolean") {
    payload.waiting_room = settings.waitingRoom;
  }
  return { ...payload, counter, ts };
}

/** The create_group frame's fields beside `env`: the access code, if any. */
export function createGroupFrameFields(settings) {
  return settings.accessCode ? { access_code: wellFormed(settings.accessCode) } : {};
}

/**
 * The signed join. A group's access code is not in it: the signed join is relayed to
 * other members, so the code travels beside it as the join frame's `access_code`
 * (see `joinFrameFields`).
 */
export function joinPayload(group, name, counter, ts) {
  return { group, name: wellFormed(name), counter, ts };
}

/** The join frame's fields beside `env`: the group, resume point and access code. */
export function joinFrameFields(group, after, accessCode) {
  return { group, after, access_code: accessCode ? wellFormed(accessCode) : undefined };
}

/** A message; with `to`, a private check-in message to that one key. */
export function postPayload(group, body, to, counter, ts) {
  const payload = { group, body: wellFormed(body) };
  if (to) {
    payload.to = to;
  }
  return { ...payload, counter, ts };
}

export function invitePayload(role, group, ttlMs, counter, ts, groups = []) {
  const payload = { role };
  if (group) {
    payload.group = group;
  }
  // A facilitator invite names the groups it grants (PROTOCOL.md §6.7).
  if (groups.length > 0) {
    payload.groups = groups;
  }
  if (Number.isSafeInteger(ttlMs)) {
    payload.ttl_ms = ttlMs;
  }
  return { ...payload, counter, ts };
}

/** `grant` (§6.25): facilitator standing for `key` in `group`, or with `revoke` taken away. */
export function grantPayload(key, group, revoke, counter, ts) {
  return revoke ? { key, group, revoke: true, counter, ts } : { key, group, counter, ts };
}

export function agreePayload(group, version, counter, ts) {
  return { group, version, counter, ts };
}

export function controlPayload(group, action, counter, ts) {
  return { group, action, counter, ts };
}

export function reportPayload(group, seq, reason, counter, ts) {
  return { group, seq, reason: wellFormed(reason), counter, ts };
}

export function stepOutPayload(group, away, counter, ts) {
  return { group, away, counter, ts };
}

/** A new record (`about` a member, or the session when absent) or, with `replyTo`, words added to one. */
export function recordPayload(group, { about, replyTo, text }, counter, ts) {
  const payload = { group };
  if (about) {
    payload.about = about;
  }
  if (Number.isSafeInteger(replyTo)) {
    payload.reply_to = replyTo;
  }
  payload.text = wellFormed(text);
  return { ...payload, counter, ts };
}

/**
 * A distress flag (payload.rs `FlagPayload`). `fields`: about (key), seq (optional
 * main-channel seq), severity, consent ("own" exactly when about is the signer),
 * reason (required with imminent_risk), withholdNotice (only with imminent_risk),
 * note. Empty optional texts are left out.
 */
export function flagPayload(group, fields, counter, ts) {
  const payload = { group, about: fields.about };
  if (Number.isSafeInteger(fields.seq)) {
    payload.seq = fields.seq;
  }
  payload.severity = fields.severity;
  payload.consent = fields.consent;
  const reason = optionalText(fields.reason);
  if (reason) {
    payload.reason = reason;
  }
  const withhold = optionalText(fields.withholdNotice);
  if (withhold) {
    payload.withhold_notice = withhold;
  }
  const note = optionalText(fields.note);
  if (note) {
    payload.note = note;
  }
  return { ...payload, counter, ts };
}

/** A supervisor's step on an escalation (`EscalationActPayload`); see `EscalationAct`. */
export function escalationActPayload(escalation, action, counter, ts) {
  return { escalation, action, counter, ts };
}

/** A Web Push subscription of this browser (`PushPayload`). */
export function pushPayload(action, subscription, counter, ts) {
  const payload = { action, endpoint: subscription.endpoint };
  if (action === "subscribe") {
    payload.p256dh = subscription.p256dh;
    payload.auth = subscription.auth;
  }
  return { ...payload, counter, ts };
}

/** The whole new on-call rota (`RotaPayload`): [{ supervisor, start_ms, end_ms, level }]. */
export function rotaPayload(entries, counter, ts) {
  return {
    entries: entries.map((e) => ({ supervisor: e.supervisor, start_ms: e.start_ms, end_ms: e.end_ms, level: e.level })),
    counter,
    ts,
  };
}

// ---- escalations (escalation.rs, payload.rs `EscalationAction`, tagged by "do") ----

/** Severities, least serious first (escalation.rs `Severity`). */
export const SEVERITIES = Object.freeze(["concern", "urgent", "emergency"]);
/** On what basis a flag is raised (escalation.rs `Consent`). */
export const CONSENTS = Object.freeze(["own", "given", "imminent_risk"]);
/** Where an escalation stands (escalation.rs `EscalationStatus`). */
export const EscalationStatus = Object.freeze({ OPEN: "open", ACKNOWLEDGED: "acknowledged", RESOLVED: "resolved" });
/** Routing level 4: nobody acknowledged in time and people were told. */
export const LEVEL_UNANSWERED = 4;
/** Rota levels: 1 primary, 2 second line. */
export const ROTA_LEVELS = Object.freeze([1, 2]);
/** Most rota entries the server accepts. */
export const MAX_ROTA_ENTRIES = 1000;

/** 0 for concern, 1 urgent, 2 emergency; -1 for anything else. */
export function severityRank(severity) {
  return SEVERITIES.indexOf(severity);
}

export const EscalationAct = Object.freeze({
  ack: () => ({ do: "ack" }),
  note: (text) => ({ do: "note", text: wellFormed(text) }),
  handover: (to) => ({ do: "handover", to }),
  resolve: (outcome) => ({ do: "resolve", outcome: wellFormed(outcome) }),
});

// ---- facilitator controls (payload.rs `ControlAction`, tagged by "do") ----

const optionalText = (text) => (text && text.trim() ? wellFormed(text.trim()) : undefined);
const withReason = (action, reason) => {
  const text = optionalText(reason);
  return text ? { ...action, reason: text } : action;
};

export const Control = Object.freeze({
  admit: (member) => ({ do: "admit", member }),
  decline: (member, reason) => withReason({ do: "decline", member }, reason),
  mute: (member, minutes) => ({ do: "mute", member, minutes }),
  unmute: (member) => ({ do: "unmute", member }),
  remove: (member, untilSessionEnd, reason) =>
    withReason({ do: "remove", member, until_session_end: untilSessionEnd === true }, reason),
  lock: () => ({ do: "lock" }),
  unlock: () => ({ do: "unlock" }),
  slowMode: (seconds) => ({ do: "slow_mode", seconds }),
  pause: () => ({ do: "pause" }),
  resume: () => ({ do: "resume" }),
  redact: (seq, reason) => ({ do: "redact", seq, reason: wellFormed(reason) }),
  pin: (seq) => ({ do: "pin", seq }),
  unpin: (seq) => ({ do: "unpin", seq }),
  addCofacilitator: (member) => ({ do: "add_cofacilitator", member }),
  handOver: (member) => ({ do: "hand_over", member }),
  setAgreement: (text) => ({ do: "set_agreement", text: wellFormed(text) }),
  checkIn: (member) => ({ do: "check_in", member }),
  openSession: () => ({ do: "open_session" }),
  endSession: () => ({ do: "end_session" }),
  clearWaiting: () => ({ do: "clear_waiting" }),
});

// ---- channels (frame.rs `Channel`) ----
//
// On the wire: absent or "main", "staff", or {"pair": [keyA, keyB]} (the server sorts
// the keys by their bytes). Inside this client a channel is a string: "main", "staff"
// or "pair:<keyA>:<keyB>" with the two base64url strings in string order (which is
// not byte order, so the wire order is not relied on); base64url never contains ":".

export const MAIN = "main";
export const STAFF = "staff";

/** The channel string of an event or ack, or null if it is not a channel. */
export function channelKey(channel) {
  if (channel === undefined || channel === null || channel === MAIN) {
    return MAIN;
  }
  if (channel === STAFF) {
    return STAFF;
  }
  const keys = channel?.pair;
  if (
    Array.isArray(keys) &&
    keys.length === 2 &&
    keys.every((k) => typeof k === "string" && k !== "" && !k.includes(":")) &&
    keys[0] !== keys[1]
  ) {
    return pairChannel(keys[0], keys[1]);
  }
  return null;
}

/** The private channel of two keys. */
export function pairChannel(a, b) {
  return a < b ? `pair:${a}:${b}` : `pair:${b}:${a}`;
}

/** The two keys of a private channel, or null. */
export function pairKeys(channel) {
  if (typeof channel !== "string" || !channel.startsWith("pair:")) {
    return null;
  }
  const [, a, b] = channel.split(":");
  return [a, b];
}

/** The other key of a private channel `me` is in, or null. */
export function pairPeer(channel, me) {
  const keys = pairKeys(channel);
  if (!keys || !keys.includes(me)) {
    return null;
  }
  return keys[0] === me ? keys[1] : keys[0];
}

// ---- frames (frame.rs `ClientFrame`) ----

/** Builds a client frame; `fields` are the type's own fields (group, after, env). */
export function clientFrame(type, id, fields) {
  const frame = { type };
  if (id !== undefined && id !== null) {
    frame.id = id;
  }
  for (const [name, value] of Object.entries(fields)) {
    if (value !== undefined && value !== null) {
      frame[name] = value;
    }
  }
  return frame;
}

/** The size the server measures a frame by: bytes of its JSON text. */
export function frameBytes(frameText) {
  return utf8(frameText).length;
}

// ---- client-side checks (the server is the authority) ----

export function isValidGroupId(text) {
  return typeof text === "string" && GROUP_ID.test(text);
}

/** Returns null if the body may be sent, or a code from errors.js explaining why not. */
export function checkBody(body, limits = DEFAULT_LIMITS) {
  if (body.trim() === "") {
    return "empty_body";
  }
  if (scalarLength(body) > limits.max_body_chars) {
    return "body_too_long";
  }
  return null;
}

/** Returns null if the title may be sent, or a code from errors.js. */
export function checkTitle(title) {
  const length = scalarLength(title.trim());
  if (length === 0) {
    return "empty_title";
  }
  if (scalarLength(title) > MAX_TITLE_CHARS) {
    return "body_too_long";
  }
  return null;
}

/**
 * Returns null if a longer text (agreement, reason, record) may be sent, or a code.
 * `required`: blank is refused (agreements, redaction reasons, records).
 */
export function checkText(text, { required = true, limits = DEFAULT_LIMITS } = {}) {
  if (required && text.trim() === "") {
    return "empty_text";
  }
  if (scalarLength(text) > (limits.max_text_chars ?? DEFAULT_LIMITS.max_text_chars)) {
    return "body_too_long";
  }
  return null;
}

// ---- verification ----

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function isCount(value) {
  return Number.isSafeInteger(value) && value >= 0;
}

/**
 * Verifies an envelope received from the server, as any member must.
 *
 * `expect.kind` (optional) is the kind the context requires; `expect.group` is the
 * group the envelope arrived in; `expect.key` (optional) the key it must be signed by.
 * Resolves { verified: true, payload } or { verified: false, reason, payload? } where
 * reason is one of "malformed", "wrong_kind", "wrong_key", "bad_signature",
 * "bad_payload", "wrong_group". `payload` is only present when the JSON parsed, and
 * must not be shown as trusted unless `verified` is true.
 */
export async function verifyEnvelope(env, expect = {}) {
  if (
    !isObject(env) ||
    typeof env.kind !== "string" ||
    typeof env.key !== "string" ||
    typeof env.payload !== "string" ||
    typeof env.sig !== "string"
  ) {
    return { verified: false, reason: "malformed" };
  }
  let payload;
  try {
    payload = JSON.parse(env.payload);
  } catch {
    payload = undefined;
  }
  const parsed = isObject(payload) ? payload : undefined;
  const fail = (reason) => ({ verified: false, reason, payload: parsed });

  if (expect.kind && env.kind !== expect.kind) {
    return fail("wrong_kind");
  }
  if (expect.key && env.key !== expect.key) {
    return fail("wrong_key");
  }
  const ok = await verifyBytes(env.key, env.sig, signingBytes(env.kind, env.payload));
  if (!ok) {
    return fail("bad_signature");
  }
  if (!parsed || !checkPayloadShape(env.kind, parsed)) {
    return fail("bad_payload");
  }
  // Every group-scoped payload names its group; a payload of a kind this version does
  // not know is held to the same rule whenever it names one.
  const namesGroup = GROUP_SCOPED.has(env.kind) || Object.hasOwn(parsed, "group");
  if (namesGroup && expect.group !== undefined && parsed.group !== expect.group) {
    return fail("wrong_group");
  }
  return { verified: true, payload: parsed };
}

const isKey = (value) => typeof value === "string" && value !== "";
const optional = (value, check) => value === undefined || check(value);
const isText = (value) => typeof value === "string";

// The fields each control action carries (payload.rs `ControlAction`).
const ACTION_SHAPES = {
  admit: (a) => isKey(a.member),
  decline: (a) => isKey(a.member) && optional(a.reason, isText),
  mute: (a) => isKey(a.member) && isCount(a.minutes),
  unmute: (a) => isKey(a.member),
  remove: (a) =>
    isKey(a.member) && optional(a.until_session_end, (v) => typeof v === "boolean") && optional(a.reason, isText),
  lock: () => true,
  unlock: () => true,
  slow_mode: (a) => isCount(a.seconds),
  pause: () => true,
  resume: () => true,
  redact: (a) => isCount(a.seq) && isText(a.reason),
  pin: (a) => isCount(a.seq),
  unpin: (a) => isCount(a.seq),
  add_cofacilitator: (a) => isKey(a.member),
  hand_over: (a) => isKey(a.member),
  set_agreement: (a) => isText(a.text),
  check_in: (a) => isKey(a.member),
  open_session: () => true,
  end_session: () => true,
  clear_waiting: () => true,
};

// The fields each escalation action carries (payload.rs `EscalationAction`).
const ESCALATION_SHAPES = {
  ack: () => true,
  note: (a) => isText(a.text),
  handover: (a) => isKey(a.to),
  resolve: (a) => isText(a.outcome),
};

function checkPayloadShape(kind, p) {
  const counted = isCount(p.counter) && isCount(p.ts);
  const scoped = counted && typeof p.group === "string";
  switch (kind) {
    case Kind.POST:
      return scoped && isText(p.body) && optional(p.to, isKey);
    case Kind.JOIN:
      return scoped && isText(p.name) && optional(p.access_code, isText);
    case Kind.AGREE:
      return scoped && isCount(p.version);
    case Kind.CONTROL: {
      // An action this version does not know still verifies (its signature is
      // checked); it is shown as an action this app can't describe.
      const action = p.action;
      const known = isObject(action) && Object.hasOwn(ACTION_SHAPES, action.do);
      return scoped && isObject(action) && typeof action.do === "string" && (!known || ACTION_SHAPES[action.do](action));
    }
    case Kind.REPORT:
      return scoped && isCount(p.seq) && isText(p.reason);
    case Kind.STEP_OUT:
      return scoped && typeof p.away === "boolean";
    case Kind.RECORD:
      return scoped && isText(p.text) && optional(p.about, isKey) && optional(p.reply_to, isCount);
    case Kind.INVITE:
      return counted && isText(p.role) && optional(p.group, isText);
    case Kind.CREATE_GROUP:
      return counted && typeof p.group === "string" && typeof p.title === "string";
    case Kind.REDEEM:
      return counted && typeof p.token === "string";
    case Kind.FLAG:
      return (
        scoped &&
        isKey(p.about) &&
        optional(p.seq, isCount) &&
        SEVERITIES.includes(p.severity) &&
        CONSENTS.includes(p.consent) &&
        optional(p.reason, isText) &&
        optional(p.withhold_notice, isText) &&
        optional(p.note, isText)
      );
    case Kind.ESCALATION: {
      const action = p.action;
      const known = isObject(action) && Object.hasOwn(ESCALATION_SHAPES, action.do);
      return (
        counted &&
        isCount(p.escalation) &&
        isObject(action) &&
        typeof action.do === "string" &&
        (!known || ESCALATION_SHAPES[action.do](action))
      );
    }
    case Kind.ROTA:
      return (
        counted &&
        Array.isArray(p.entries) &&
        p.entries.every((e) => isObject(e) && isKey(e.supervisor) && isCount(e.start_ms) && isCount(e.end_ms) && isCount(e.level))
      );
    case Kind.AUTH:
      return isCount(p.ts) && typeof p.challenge === "string";
    default:
      // A kind this version does not know (a later facilitator action, say): the
      // signature is checked, the contents are not interpreted.
      return true;
  }
}

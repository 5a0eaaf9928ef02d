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
});

/** Roles a key can hold (frame.rs `Role`). */
export const ROLES = Object.freeze(["admin", "facilitator", "supervisor"]);

/** Group kinds (payload.rs `GroupKind`). */
export const GROUP_KINDS = Object.freeze(["drop_in", "virtual"]);

/** Limits used until the server's `hello` announces its own (limits.rs). */
export const DEFAULT_LIMITS = Object.freeze({
  max_frame_bytes: 16 * 1024,
  max_body_chars: 4000,
  max_name_chars: 32,
  max_clock_skew_ms: 120_000,
});

export const MAX_TITLE_CHARS = 80;
/** Events the server replays on a join without `after`. */
export const HISTORY_ON_JOIN = 100;
export const MAX_GROUP_ID_LEN = 32;
const GROUP_ID = /^[a-z0-9][a-z0-9-]{0,31}$/;

// Kinds whose payload names a group that must match the group it arrived in.
const GROUP_SCOPED = new Set([Kind.CREATE_GROUP, Kind.JOIN, Kind.POST]);

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

export function redeemPayload(token, counter, ts) {
  return { token, counter, ts };
}

export function createGroupPayload(group, title, groupKind, counter, ts) {
  return { group, title: wellFormed(title), group_kind: groupKind, counter, ts };
}

export function joinPayload(group, name, counter, ts) {
  return { group, name: wellFormed(name), counter, ts };
}

export function postPayload(group, body, counter, ts) {
  return { group, body: wellFormed(body), counter, ts };
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

function checkPayloadShape(kind, p) {
  const counted = isCount(p.counter) && isCount(p.ts);
  switch (kind) {
    case Kind.POST:
      return counted && typeof p.group === "string" && typeof p.body === "string";
    case Kind.JOIN:
      return counted && typeof p.group === "string" && typeof p.name === "string";
    case Kind.CREATE_GROUP:
      return counted && typeof p.group === "string" && typeof p.title === "string";
    case Kind.REDEEM:
      return counted && typeof p.token === "string";
    case Kind.AUTH:
      return isCount(p.ts) && typeof p.challenge === "string";
    default:
      // A kind this version does not know (a later facilitator action, say): the
      // signature is checked, the contents are not interpreted.
      return true;
  }
}

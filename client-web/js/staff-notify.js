// What the staff service worker does with a push and an "Acknowledge" press, as a
// module of its own so the page (and the browser tests) can run the same code.
//
// Owns: turning a push's content-free payload into a notification, and signing an
// `escalation` ack with this browser's key (non-extractable, from IndexedDB) and
// posting it to the hub's /push/ack. Touches no DOM.

import { CounterSource } from "./counters.js";
import { openStore } from "./store.js";
import { Kind, escalationActPayload, signEnvelope } from "./protocol.js";

const SEVERITY = { concern: "Concern", urgent: "Urgent", emergency: "Emergency" };

function timeLeft(seconds) {
  if (!Number.isSafeInteger(seconds)) {
    return "waiting";
  }
  if (seconds <= 0) {
    return "past its deadline";
  }
  if (seconds < 60) {
    return `${seconds} s left`;
  }
  const minutes = Math.floor(seconds / 60);
  return seconds % 60 ? `${minutes} min ${seconds % 60} s left` : `${minutes} min left`;
}

/** A push's JSON payload → { title, options } for showNotification. */
export function notificationFor(data) {
  const id = Number.isSafeInteger(data?.escalation) ? data.escalation : null;
  const severity = SEVERITY[data?.severity] ? data.severity : "urgent";
  const group = typeof data?.group === "string" && data.group ? data.group.slice(0, 80) : "a group";
  return {
    title: `peerhub: ${SEVERITY[severity]} escalation`,
    options: {
      body: `In ${group}, ${timeLeft(data?.seconds_left)}. Open to respond, or acknowledge here.`,
      tag: `escalation-${id}`,
      renotify: true,
      requireInteraction: severity !== "concern",
      data: { id },
      actions: id === null ? [] : [{ action: "ack", title: "Acknowledge" }],
    },
  };
}

/**
 * Signs an `escalation` ack of `id` with this browser's key and posts it to the hub
 * at `base` (the worker's or page's location). Resolves with the hub's answer:
 * { ok, status, code }.
 */
export async function acknowledge(id, base) {
  const store = await openStore();
  const identity = await store.get("identity");
  if (!identity?.keyPair?.privateKey || !identity.publicKey) {
    return { ok: false, status: 0, code: "no_identity" };
  }
  const counter = await new CounterSource(store).next();
  const env = await signEnvelope(identity, Kind.ESCALATION, escalationActPayload(id, { do: "ack" }, counter, Date.now()));
  const response = await fetch(new URL("./push/ack", base).href, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(env),
    credentials: "omit",
  });
  const answer = await response.json().catch(() => ({}));
  return { ok: response.ok, status: response.status, code: typeof answer.code === "string" ? answer.code : null };
}

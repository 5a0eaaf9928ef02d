// The staff console's service worker: Web Push notifications for escalations, and
// acknowledging one from its notification.
//
// Registered only by the staff console (js/ui/staff-app.js), never for participants,
// with the scope "./staff/" so it controls no page: it only receives pushes and
// notification clicks. It reads nothing but what a push says (severity, group name,
// time left, the escalation's link) and signs with the key already in IndexedDB
// (non-extractable: the worker can use it, not read it). It caches nothing.

import { openStore } from "./js/store.js";
import { CounterSource } from "./js/counters.js";
import { Kind, escalationActPayload, signEnvelope } from "./js/protocol.js";

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

function read(event) {
  let data = {};
  try {
    data = event.data?.json() ?? {};
  } catch {
    data = {};
  }
  const id = Number.isSafeInteger(data.escalation) ? data.escalation : null;
  const severity = SEVERITY[data.severity] ? data.severity : "urgent";
  const group = typeof data.group === "string" ? data.group.slice(0, 80) : "a group";
  return { id, severity, group, seconds: data.seconds_left };
}

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  const { id, severity, group, seconds } = read(event);
  const title = `peerhub: ${SEVERITY[severity]} escalation`;
  const body = `In ${group}, ${timeLeft(seconds)}. Open to respond, or acknowledge here.`;
  event.waitUntil(
    self.registration.showNotification(title, {
      body,
      tag: `escalation-${id}`,
      renotify: true,
      requireInteraction: severity !== "concern",
      data: { id },
      actions: id === null ? [] : [{ action: "ack", title: "Acknowledge" }],
    }),
  );
});

/** Signs an `escalation` ack with this browser's key and posts it to the hub. */
async function acknowledge(id) {
  const store = await openStore();
  const identity = await store.get("identity");
  if (!identity?.keyPair?.privateKey || !identity.publicKey) {
    return false;
  }
  const counter = await new CounterSource(store).next();
  const env = await signEnvelope(identity, Kind.ESCALATION, escalationActPayload(id, { do: "ack" }, counter, Date.now()));
  const response = await fetch(new URL("./push/ack", self.location).href, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(env),
    credentials: "omit",
  });
  return response.ok;
}

/** Brings a console window forward on the escalation, or opens one. */
async function openConsole(id) {
  const url = new URL(id === null ? "./#console" : `./#escalation=${id}`, self.location).href;
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const mine = windows.find((w) => new URL(w.url).origin === self.location.origin);
  if (mine) {
    mine.postMessage({ type: "peerhub-open-escalation", id });
    return mine.focus();
  }
  return self.clients.openWindow(url);
}

self.addEventListener("notificationclick", (event) => {
  const id = event.notification.data?.id ?? null;
  event.notification.close();
  if (event.action === "ack" && id !== null) {
    event.waitUntil(
      acknowledge(id)
        .catch(() => false)
        .then((ok) =>
          ok
            ? self.registration.showNotification("peerhub: acknowledged", {
                body: "You have it. Open peerhub to respond.",
                tag: `escalation-${id}`,
                data: { id },
              })
            : openConsole(id),
        ),
    );
    return;
  }
  event.waitUntil(openConsole(id));
});

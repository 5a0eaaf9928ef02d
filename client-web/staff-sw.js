// The staff console's service worker: Web Push notifications for escalations, and
// acknowledging one from its notification.
//
// Registered only by the staff console (js/ui/staff-app.js), never for participants,
// with the scope "./staff/" so it controls no page: it only receives pushes and
// notification clicks. It reads nothing but what a push says (severity, group name,
// time left, the escalation's id) and signs with the key already in IndexedDB
// (non-extractable: the worker can use it, not read it). It caches nothing. The work
// itself is in js/staff-notify.js.

import { acknowledge, notificationFor } from "./js/staff-notify.js";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data?.json() ?? {};
  } catch {
    data = {};
  }
  const { title, options } = notificationFor(data);
  event.waitUntil(self.registration.showNotification(title, options));
});

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
      acknowledge(id, self.location)
        .catch(() => ({ ok: false }))
        .then((answer) =>
          answer.ok
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

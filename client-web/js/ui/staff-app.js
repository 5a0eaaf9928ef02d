// The installable staff console: Web Push, the app manifest and its service worker,
// the repeated alarm and the waiting count in the tab title — for supervisors and
// admins only.
//
// Owns: the <link rel="manifest"> (added only once this key is known to be staff,
// never for a participant: an installed icon can expose someone on a watched phone),
// the service worker registration (staff-sw.js, scoped to "./staff/" so it controls
// no page), this browser's push subscription and its `push` command, document.title,
// the alarm repeat, and #push-status / #rota-reach (who nobody can reach).

import { ALARM_REPEAT_MS } from "../config.js";
import { fromBase64Url, toBase64Url } from "../encoding.js";
import { EscalationStatus, Kind, pushPayload } from "../protocol.js";
import { createStaffList, staffLabel } from "../staff-list.js";
import { byId } from "./dom.js";

const BASE_TITLE = "peerhub";

export function createStaffApp({ desk, connection, alerts, onOpenEscalation }) {
  const staffList = createStaffList(connection);
  const pushStatus = byId("push-status");
  const reach = byId("rota-reach");
  let installing = null;

  const say = (text) => {
    pushStatus.textContent = text;
  };

  function waiting() {
    return desk.queue().filter((e) => e.view.status === EscalationStatus.OPEN).length;
  }

  function renderTitle() {
    const n = desk.isStaff() ? waiting() : 0;
    const title = n > 0 ? `(${n}) ${BASE_TITLE}` : BASE_TITLE;
    if (document.title !== title) {
      document.title = title;
    }
  }

  function addManifest() {
    if (document.querySelector('link[rel="manifest"]')) {
      return;
    }
    const link = document.createElement("link");
    link.rel = "manifest";
    link.href = "staff.webmanifest";
    document.head.append(link);
  }

  async function subscribe(registration) {
    const info = await connection.request("alerting");
    await showReach(info);
    if (typeof info.vapid_key !== "string") {
      say("This hub does not send pushes; keep this page open, or ask for a pager.");
      return;
    }
    if (!registration.pushManager) {
      say("This browser cannot receive pushes: keep this page open while on call.");
      return;
    }
    if (globalThis.Notification?.permission !== "granted") {
      say("Turn on notifications to be reached when this page is closed.");
      return;
    }
    let subscription = await registration.pushManager.getSubscription();
    if (!subscription) {
      subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: fromBase64Url(info.vapid_key),
      });
    }
    const p256dh = subscription.getKey("p256dh");
    const auth = subscription.getKey("auth");
    if (!p256dh || !auth) {
      say("This browser's push subscription has no keys: keep this page open while on call.");
      return;
    }
    const fields = { endpoint: subscription.endpoint, p256dh: toBase64Url(p256dh), auth: toBase64Url(auth) };
    await connection.signedRequest("push", Kind.PUSH, (counter, ts) => pushPayload("subscribe", fields, counter, ts));
    say("This device gets escalation pushes, even with peerhub closed.");
  }

  /** Registers the worker and subscribes; safe to call again (after a permission). */
  function install() {
    if (!desk.isStaff()) {
      return Promise.resolve();
    }
    addManifest();
    if (!("serviceWorker" in navigator)) {
      say("This browser cannot receive pushes: keep this page open while on call.");
      return Promise.resolve();
    }
    installing =
      installing ??
      navigator.serviceWorker
        .register("staff-sw.js", { type: "module", scope: "./staff/" })
        .then(() => navigator.serviceWorker.getRegistration("./staff/"))
        .then((registration) => subscribe(registration))
        .catch(() => say("Pushes could not be set up here: keep this page open while on call."))
        .finally(() => {
          installing = null;
        });
    return installing;
  }

  /** The names staff gave at their invite (the admin's `staff` list), for `keys`. */
  async function staffNames(keys) {
    let names = new Map();
    try {
      names = new Map((await staffList.load()).staff.map((s) => [s.key, s.name]));
    } catch {
      // Unnamed below: the warning matters more than the names.
    }
    return keys.map((key) => staffLabel({ key, name: names.get(key) ?? null }, "an unnamed supervisor"));
  }

  /** Admins: the supervisors on the rota nobody can reach away from the console. */
  async function showReach(info) {
    if (!connection.roles.includes("admin")) {
      reach.hidden = true;
      return;
    }
    const keys = Array.isArray(info?.unreachable) ? info.unreachable : [];
    reach.hidden = false;
    const lowSpace = Number.isSafeInteger(info?.low_space_free_mb) ? info.low_space_free_mb : null;
    reach.dataset.state = keys.length || lowSpace !== null ? "warn" : "ok";
    if (lowSpace !== null) {
      // Before anything else: new groups and new members are being refused.
      reach.textContent = `The hub's disk is nearly full (${lowSpace} MiB free): new groups and new members are refused until the operator frees space. Messages and calls for help still go through.`;
    } else if (info?.pager) {
      reach.textContent = "A pager is set up: everyone on the rota can be reached away from the console.";
    } else if (keys.length === 0) {
      reach.textContent = "Everyone on the rota gets pushes on a device.";
    } else {
      const who = (await staffNames(keys)).join(", ");
      reach.textContent = `Nobody can reach ${keys.length === 1 ? "this supervisor" : "these supervisors"} away from the console (no push subscription, no pager): ${who}. Ask them to open the console on their phone and turn on notifications.`;
    }
  }

  async function refreshReach() {
    if (!connection.roles.includes("admin") || !connection.authenticated) {
      return;
    }
    try {
      await showReach(await connection.request("alerting"));
    } catch {
      // offline: the next login asks again
    }
  }

  // The service worker brings an existing window to the escalation it was about.
  navigator.serviceWorker?.addEventListener("message", (ev) => {
    if (ev.data?.type === "peerhub-open-escalation") {
      onOpenEscalation(Number.isSafeInteger(ev.data.id) ? ev.data.id : null);
    }
  });

  desk.addEventListener("change", renderTitle);
  desk.addEventListener("rota", refreshReach);
  connection.addEventListener("authenticated", () => {
    renderTitle();
    install();
  });
  byId("alerts-enable").addEventListener("click", () => {
    // After the person allowed notifications: subscribe now.
    setTimeout(() => install(), 0);
  });
  setInterval(() => {
    const n = desk.isStaff() ? waiting() : 0;
    if (n > 0) {
      alerts.repeat(n);
    }
  }, ALARM_REPEAT_MS);
  renderTitle();

  return { install, renderTitle, refreshReach };
}

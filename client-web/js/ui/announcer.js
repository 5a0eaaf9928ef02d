// Announcements for screen readers: new messages as they arrive, and alerts.
//
// Owns: #live-announcer (polite) and #alert-announcer (assertive), visually hidden
// live regions outside every screen, so they speak whichever screen is shown. The
// message list itself is not a live region, because joining a group inserts up to a
// hundred history messages at once and a screen reader would read them all. Only live
// messages from other people are announced, and unverified ones without their text.
// The assertive region is kept for what must interrupt: a new escalation for a
// supervisor, and the answer to a call for help.

import { byId } from "./dom.js";

const MAX_ITEMS = 5;
const MAX_CHARS = 300;
let region;
let alertRegion;

export function initAnnouncer() {
  region = byId("live-announcer");
  alertRegion = byId("alert-announcer");
}

function say(target, text) {
  if (!target) {
    return;
  }
  const item = document.createElement("p");
  item.textContent = text.length > MAX_CHARS ? `${text.slice(0, MAX_CHARS)}…` : text;
  target.appendChild(item);
  while (target.childElementCount > MAX_ITEMS) {
    target.firstElementChild.remove();
  }
}

/** A polite announcement (new messages, changes of state). */
export function announce(text) {
  say(region, text);
}

/** An assertive announcement: only for what must interrupt. */
export function alertNow(text) {
  say(alertRegion, text);
}

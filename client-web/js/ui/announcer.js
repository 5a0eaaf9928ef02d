// Announcements for screen readers: new messages as they arrive.
//
// Owns: #live-announcer, a visually hidden aria-live="polite" region. The message list
// itself is not a live region, because joining a group inserts up to a hundred
// history messages at once and a screen reader would read them all. Only live
// messages from other people are announced here, and unverified ones without their
// text.

import { byId } from "./dom.js";

const MAX_ITEMS = 5;
const MAX_CHARS = 300;
let region;

export function initAnnouncer() {
  region = byId("live-announcer");
}

export function announce(text) {
  if (!region) {
    return;
  }
  const item = document.createElement("p");
  item.textContent = text.length > MAX_CHARS ? `${text.slice(0, MAX_CHARS)}…` : text;
  region.appendChild(item);
  while (region.childElementCount > MAX_ITEMS) {
    region.firstElementChild.remove();
  }
}

// Page-level notices: invite outcomes, server restarts, errors not tied to a field.
//
// Owns: #app-notice (a polite live region) and its dismiss button. One notice at a
// time; a newer one replaces an older one. Text only.

import { byId } from "./dom.js";

let region;
let textEl;

export function initNotices() {
  region = byId("app-notice");
  textEl = byId("app-notice-text");
  byId("app-notice-dismiss").addEventListener("click", clearNotice);
}

/** Shows a notice. tone: "info" | "success" | "error". */
export function showNotice(text, tone = "info") {
  if (!region) {
    return;
  }
  textEl.textContent = text;
  region.dataset.tone = tone;
  region.hidden = false;
}

/** Clears the notice only if it still says `text` (a newer notice stays). */
export function clearNoticeIf(text) {
  if (region && !region.hidden && textEl.textContent === text) {
    clearNotice();
  }
}

export function clearNotice() {
  if (region) {
    region.hidden = true;
    textEl.textContent = "";
  }
}

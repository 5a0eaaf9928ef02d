// The waiting room, as the person waiting sees it: calm words, "I need support now",
// and the helplines.
//
// Owns: #stage-waiting. It changes by itself when a facilitator lets the person in
// (the session reports it; group-stage.js moves on).

import { byId } from "./dom.js";
import { renderHelplines } from "./helplines.js";

export function createWaitingView({ onSupport }) {
  renderHelplines(byId("waiting-helplines-lead"), byId("waiting-helplines"));
  byId("waiting-support").addEventListener("click", () => onSupport());
  return {};
}

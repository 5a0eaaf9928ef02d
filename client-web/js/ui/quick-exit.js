// Quick exit: leave at once and leave no way Back.
//
// Owns: the #quick-exit button and the double-Escape shortcut. On exit it closes the
// socket, empties the page (so nothing lingers on screen while the next page loads)
// and replaces this history entry with a neutral page. Screens inside peerhub never
// add history entries (see links.js), so Back goes to wherever the person was before.

import { QUICK_EXIT_DOUBLE_ESCAPE_MS, QUICK_EXIT_URL } from "../config.js";

// How long quick exit waits for "forget this device" before leaving anyway.
const FORGET_WAIT_MS = 1500;

export function initQuickExit({ button, beforeExit, forget = () => null }) {
  let lastEscape = 0;
  let exiting = false;

  const exit = () => {
    if (exiting) {
      return;
    }
    exiting = true;
    try {
      beforeExit();
    } catch {
      // Leaving matters more than tidying up.
    }
    document.title = "New tab";
    document.body.replaceChildren();
    const leave = () => globalThis.location.replace(new URL(QUICK_EXIT_URL, globalThis.location.href).href);
    // With "quick exit also forgets", the page is already blank; the wipe gets a
    // moment (it is quick), then the page goes whatever happened.
    let wiping = null;
    try {
      wiping = forget();
    } catch {
      wiping = null;
    }
    if (wiping) {
      Promise.race([wiping, new Promise((r) => setTimeout(r, FORGET_WAIT_MS))]).finally(leave);
    } else {
      leave();
    }
  };

  button.addEventListener("click", exit);
  document.addEventListener(
    "keydown",
    (ev) => {
      if (ev.key !== "Escape" || ev.repeat) {
        return;
      }
      const now = Date.now();
      if (now - lastEscape <= QUICK_EXIT_DOUBLE_ESCAPE_MS) {
        exit();
      }
      lastEscape = now;
    },
    // Capture phase, so a panel that handles Escape itself cannot swallow the shortcut.
    true,
  );
}

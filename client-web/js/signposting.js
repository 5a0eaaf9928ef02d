// Signposting: the hub's helplines and whether a supervisor is on call.
//
// Data flow:
//   `coverage` (after login, on every change) ─► onCall + helplines ─► "change"
//   `flagged` / `support_notice` (each carries the helplines) ─► update() ─► "change"
//
// Until the first frame arrives the list is config.js's FALLBACK_HELPLINES, so the
// "Get help now" panel is never empty, even offline. Helplines come from the hub's
// configuration (`--helplines`): they are shown as text, and a contact becomes a
// tel: link only when it is a plain phone number.
//
// Owns: the current list and coverage. Knows nothing of the page (ui/helplines.js
// draws them).

import { FALLBACK_HELPLINES } from "./config.js";

/** Most helplines shown (a misconfigured hub must not flood the page). */
const MAX_HELPLINES = 30;
const MAX_FIELD = 200;

const clip = (v) => (typeof v === "string" ? v.slice(0, MAX_FIELD) : "");

/**
 * A list of helplines from a frame, cleaned: only entries with a name and a contact,
 * emergency services first (in the hub's order otherwise). Returns null when the
 * value is not a non-empty list, so a bad frame never empties what is shown.
 */
export function readHelplines(list) {
  if (!Array.isArray(list)) {
    return null;
  }
  const lines = list
    .filter((l) => l && typeof l === "object" && typeof l.name === "string" && typeof l.contact === "string")
    .filter((l) => l.name.trim() && l.contact.trim())
    .slice(0, MAX_HELPLINES)
    .map((l) => ({
      name: clip(l.name),
      contact: clip(l.contact),
      hours: clip(l.hours),
      nation: clip(l.nation),
      emergency: l.emergency === true,
    }));
  if (lines.length === 0) {
    return null;
  }
  return [...lines.filter((l) => l.emergency), ...lines.filter((l) => !l.emergency)];
}

/** The number to dial for a contact such as "116 123" or "+44 800 000", or null. */
export function dialable(contact) {
  if (!/^\+?[0-9][0-9 ()-]{1,24}$/.test(contact)) {
    return null;
  }
  return contact.replace(/[^0-9+]/g, "");
}

/** The sentence shown first: what to do in an emergency, from the emergency line. */
export function leadSentence(helplines) {
  const emergency = helplines.find((l) => l.emergency);
  return emergency
    ? `If you or someone else is in danger now, call ${emergency.contact} (${emergency.name}).`
    : "If you or someone else is in danger now, call the emergency services.";
}

const UK_NATIONS = new Set(["UK", "England", "Scotland", "Wales", "Northern Ireland"]);

/** Where the services answer, in a short sentence, or "" when it is mixed. */
export function whereSentence(helplines) {
  const nations = helplines.map((l) => l.nation).filter(Boolean);
  if (nations.length > 0 && nations.every((n) => UK_NATIONS.has(n))) {
    return "These services are in the UK. Where each one answers is shown beside it.";
  }
  return "";
}

export class Signposting extends EventTarget {
  constructor() {
    super();
    this.helplines = readHelplines(FALLBACK_HELPLINES);
    this.fromHub = false;
    this.onCall = null; // unknown until the first `coverage`
  }

  /** Follows the connection's `coverage` frames. */
  listen(connection) {
    connection.addEventListener("coverage", (ev) => {
      this.update(ev.detail.helplines, { onCall: ev.detail.on_call === true });
    });
    connection.addEventListener("support", (ev) => this.update(ev.detail.helplines));
  }

  /** Takes the helplines of a frame (and the coverage, when it says). */
  update(list, { onCall } = {}) {
    const lines = readHelplines(list);
    let changed = false;
    if (lines && JSON.stringify(lines) !== JSON.stringify(this.helplines)) {
      this.helplines = lines;
      changed = true;
    }
    if (lines) {
      this.fromHub = true;
    }
    if (typeof onCall === "boolean" && onCall !== this.onCall) {
      this.onCall = onCall;
      changed = true;
    }
    if (changed) {
      this.dispatchEvent(new CustomEvent("change"));
    }
  }
}

// Who in this group has asked for support, as the facilitators are told: the hub's
// `support_asked` and `support_resolved` notes in the staff channel (PROTOCOL.md
// §8.10). The waiting room, the member list and the staff panel read it from here.
//
// Owns nothing: it reads the session's staff log, in seq order; the latest note
// about a member wins. A note never names who raised a flag about someone else, and
// carries words only where the person raised or agreed to the flag.

import { STAFF } from "../protocol.js";

const SEVERITY_WORDS = {
  emergency: "emergency: may be in danger now",
  urgent: "urgent: needs support within minutes",
  concern: "concern: would like someone to check in",
};

/** Whether a staff record is a hub note about a request for support. */
export function isSupportNote(record) {
  const kind = record?.from === "hub" ? record.note?.note : null;
  return kind === "support_asked" || kind === "support_resolved";
}

/** Member key -> the latest `support_asked` note about them, while not resolved. */
export function openRequests(session) {
  const open = new Map();
  const records = [...session.log(STAFF).values()].sort((a, b) => a.seq - b.seq);
  for (const record of records) {
    if (!isSupportNote(record)) {
      continue;
    }
    const note = record.note;
    if (note.note === "support_asked") {
      open.set(note.member, { ...note, ts: record.ts });
    } else {
      open.delete(note.member);
    }
  }
  return open;
}

/** The severity in plain words. */
export function severityWords(severity) {
  return SEVERITY_WORDS[severity] ?? "severity not known";
}

/** A short state for a member list or the waiting room ("asked for support (urgent: ...)"). */
export function requestState(request) {
  if (!request) {
    return null;
  }
  const how = request.own ? "asked for support" : "someone asked for support for them";
  return `${how} (${severityWords(request.severity)})`;
}

/** The staff panel's sentence for a note; `name` names the member. */
export function noteSentence(note, name) {
  if (note.note === "support_resolved") {
    return `The request for support for ${name} has been closed by a supervisor.`;
  }
  const who = note.own ? `${name} asked for support` : `Someone asked for support for ${name}`;
  const count = note.flags > 1 ? ` ${note.flags} requests so far.` : "";
  const withheld = note.withheld
    ? " They have not been told that someone asked, because of a risk of immediate harm: please don't tell them."
    : "";
  return `${who} — ${severityWords(note.severity)}. The supervisor on call has been asked.${count}${withheld}`;
}

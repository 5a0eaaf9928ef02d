// What a person sees when the server takes them out of a group: declined from the
// waiting room, removed by a facilitator, the session ended, or (for a facilitator) an
// admin took the group off their list. Kind and clear: what
// happened, the words the facilitator gave, the helplines, and what comes next.
//
// Owns: #stage-dismissed. "Join the next session" and "Back to the start" are the
// app's business (onRejoin, onHome).

import { DismissReason } from "../protocol.js";
import { formatDateTime } from "../time-words.js";
import { byId } from "./dom.js";
import { renderHelplines } from "./helplines.js";

const TITLES = {
  [DismissReason.DECLINED]: "You weren't let in this time",
  [DismissReason.REMOVED]: "You've been taken out of the group",
  [DismissReason.SESSION_ENDED]: "The session has ended",
  [DismissReason.WAITING_CLEARED]: "The waiting room was cleared",
  [DismissReason.GRANT_REVOKED]: "You no longer run this group",
};

const DETAILS = {
  [DismissReason.DECLINED]:
    "This can happen for many reasons, and it doesn't have to mean anything about you. If you're struggling, the helplines below are there now.",
  [DismissReason.REMOVED]:
    "If you think this was a mistake, you can say so to the organisers. If you're struggling, the helplines below are there now.",
  [DismissReason.SESSION_ENDED]: "Nothing more is needed from you. You can close this page, or use Quick exit.",
  [DismissReason.WAITING_CLEARED]:
    "It isn't about you: everyone waiting was asked to leave. You can knock again. If you're struggling, the helplines below are there now.",
  [DismissReason.GRANT_REVOKED]:
    "An admin has taken this group off your list, so its console has closed. Your other groups are as they were. If you think this is a mistake, ask an admin.",
};

export function createDismissedView({ onRejoin, onHome }) {
  const title = byId("dismissed-title");
  const message = byId("dismissed-message");
  const detail = byId("dismissed-detail");
  const next = byId("dismissed-next");
  const rejoin = byId("dismissed-rejoin");
  renderHelplines(byId("dismissed-helplines-lead"), null);
  rejoin.addEventListener("click", () => onRejoin());
  byId("dismissed-home").addEventListener("click", () => onHome());

  return {
    show(dismissal, state) {
      const reason = dismissal.reason;
      title.textContent = TITLES[reason] ?? "You're no longer in the group";
      // The hub's words often repeat the title ("The session has ended. Thank you
      // for being here."): say the title once.
      const title0 = title.textContent.toLowerCase();
      const words = String(dismissal.message ?? "").trim();
      const rest = words.toLowerCase().startsWith(title0) ? words.slice(title0.length).replace(/^[.!]\s*/, "") : words;
      message.textContent = rest;
      message.hidden = !rest;
      detail.textContent = DETAILS[reason] ?? "";
      const ended = reason === DismissReason.SESSION_ENDED;
      const nextMs = state?.next_session_ms;
      const timed = Number.isFinite(nextMs);
      next.hidden = !ended;
      next.textContent = timed
        ? `The next session opens ${formatDateTime(nextMs)} (your local time).`
        : "No time is set for the next session yet.";
      // "Join the next session" only when there is one to join; after the waiting
      // room was cleared, a way to knock again.
      const cleared = reason === DismissReason.WAITING_CLEARED;
      rejoin.hidden = !((ended && timed) || cleared);
      rejoin.textContent = cleared ? "Knock again" : "Join the next session";
    },
  };
}

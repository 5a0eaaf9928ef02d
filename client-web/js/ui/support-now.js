// "I need support now": a person asks for help for themselves, and hears how it goes.
//
// Owns: #support-panel. Asking is two steps, in this order:
//   1. a distress flag about oneself (consent "own"), signed and sent through the
//      session, with a severity chosen in plain words — "I need support soon"
//      (urgent, the default), "I'm in danger now" (emergency), or "it can wait a
//      little" (concern) — and an optional note; the `flagged` answer is shown kindly
//      with the helplines it carries;
//   2. the private line to the lead facilitator, one button away (the words "I need
//      support now" written in for the person; sending stays their choice).
// Every `support_notice` for this group (support_asked, acknowledged, unanswered,
// resolved) is listed here with its words and the helplines from the frame, and
// announced. Notices are not replayed by the hub, so after a reconnect the escalations
// this page knows of are read again (`escalations`) and what changed meanwhile (picked
// up, closed) is said. The flag is the help path: no mute, pause, slow mode, waiting room or
// removal stands in its way, so the button is offered on every stage.

import { SUPPORT_MESSAGE } from "../config.js";
import { sentenceFor } from "../errors.js";
import { checkText } from "../protocol.js";
import { alertNow, announce } from "./announcer.js";
import { byId, formatTime, h, setFieldError } from "./dom.js";
import { errorSentence } from "./feedback.js";
import { currentHelplines, renderHelplines, helplinesFrom } from "./helplines.js";
import { NOTICE_TITLE, NOTICE_TONE, flaggedWords } from "./support-words.js";
import { facilitatorName } from "./who.js";

// What the hub's escalation status means, as the notice that would have said it.
const STATUS_NOTICE = { acknowledged: "acknowledged", resolved: "resolved" };

export function createSupportNow({ privatePanel }) {
  const panel = byId("support-panel");
  const title = byId("support-title");
  const form = byId("support-form");
  const danger = byId("support-danger");
  const note = byId("support-note");
  const noteError = byId("support-note-error");
  const send = byId("support-send");
  const result = byId("support-result");
  const updates = byId("support-updates");
  const privateRow = byId("support-private-row");
  const privateText = byId("support-private-text");
  const privateButton = byId("support-private");
  const helplinesLead = byId("support-helplines-lead");
  // The list itself is the one sheet's (top bar); here only the emergency line.
  const helplinesList = null;
  let session = null;
  let returnFocusTo = null;
  // Escalations this page has heard of (our flags, notices to us), by our own
  // reference (the hub never tells us an id): reference -> status.
  const known = new Map();

  // News while the panel is closed is told under the top bar (tap to open), so it
  // never covers what the person is reading.
  const alertBox = byId("support-alert");
  const alertOpen = byId("support-alert-open");
  const hideAlert = () => {
    alertBox.hidden = true;
  };
  alertOpen.addEventListener("click", () => {
    hideAlert();
    open({ asking: false, focus: true });
  });
  byId("support-alert-dismiss").addEventListener("click", hideAlert);

  function addUpdate(kind, message, { away = false } = {}) {
    const heading = NOTICE_TITLE[kind] ?? "News about a request for support";
    updates.append(
      h(
        "li",
        { className: "support-update", dataset: { notice: kind, tone: NOTICE_TONE[kind] ?? "info" } },
        h("p", { className: "support-update-head" }, h("strong", { text: heading }), " ", h("time", { text: formatTime(Date.now()) })),
        message ? h("p", { text: message }) : null,
        h("p", { className: "hub-hint", text: away ? "While you were disconnected." : "From the hub (not a person's message)." }),
      ),
    );
    if (panel.hidden) {
      alertOpen.textContent = `${heading}. Tap to read.`;
      alertBox.hidden = false;
    }
    announce(`${heading}. ${message}`);
  }

  /** After a reconnect: what happened to the escalations we know of while away. */
  async function catchUp() {
    if (!session || known.size === 0) {
      return;
    }
    let reply;
    try {
      reply = await session.conn.request("escalations");
    } catch {
      return;
    }
    for (const view of Array.isArray(reply.escalations) ? reply.escalations : []) {
      const kind = STATUS_NOTICE[view?.status];
      if (!session || !known.has(view?.reference) || view.group !== session.groupId || !kind || known.get(view.reference) === view.status) {
        continue;
      }
      known.set(view.reference, view.status);
      addUpdate(kind, view.status === "resolved" ? "The request for support was closed." : "A supervisor has seen the request for support and is on it.", { away: true });
    }
  }
  const onAuthenticated = () => catchUp();

  const severity = () => form.querySelector("input[name=support-severity]:checked")?.value ?? "urgent";

  function showDanger() {
    const emergency = currentHelplines().find((l) => l.emergency);
    danger.hidden = severity() !== "emergency";
    danger.textContent = emergency
      ? `If you are in danger now, please also call ${emergency.contact} (${emergency.name}). Asking here is not an emergency service.`
      : "If you are in danger now, please also call the emergency services. Asking here is not an emergency service.";
  }
  form.addEventListener("change", showDanger);

  function renderPrivateRow() {
    if (!session) {
      return;
    }
    const lead = session.lead();
    // Facilitators are the private line themselves; taken out of the group, it's closed.
    privateRow.hidden = Boolean(session.dismissal) || session.canModerate();
    privateText.textContent = lead
      ? `You can also write privately to ${facilitatorName(session, lead)}, the facilitator leading this group. Only they will read it.`
      : "You can also write privately to a facilitator when one is here.";
    privateButton.textContent = lead ? `Write privately to ${facilitatorName(session, lead)}` : "Write privately to a facilitator";
  }

  function open({ asking, focus }) {
    if (panel.hidden && focus) {
      returnFocusTo = document.activeElement;
    }
    hideAlert();
    panel.hidden = false;
    document.body.dataset.front = "support";
    renderPrivateRow();
    if (asking) {
      title.textContent = "Ask for support now";
      form.hidden = false;
      result.replaceChildren();
      showDanger();
    }
    if (focus) {
      (asking ? form.querySelector("input[name=support-severity]:checked") : title)?.focus();
    }
  }

  function close() {
    panel.hidden = true;
    form.hidden = true;
    if (returnFocusTo?.isConnected) {
      returnFocusTo.focus();
    }
    returnFocusTo = null;
  }

  byId("support-close").addEventListener("click", close);
  panel.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !ev.defaultPrevented) {
      close();
    }
  });
  privateButton.addEventListener("click", () => {
    if (!session) {
      return;
    }
    privatePanel.open(session.lead(), { prefill: SUPPORT_MESSAGE });
    privatePanel.showHelplines();
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!session) {
      return;
    }
    const problem = checkText(note.value.trim(), { required: false, limits: session.conn.limits });
    if (problem) {
      setFieldError(note, noteError, sentenceFor(problem));
      note.focus();
      return;
    }
    setFieldError(note, noteError, "");
    send.disabled = true;
    result.replaceChildren("Sending your request…");
    try {
      const reply = await session.flag({
        about: session.identity.publicKey,
        severity: severity(),
        consent: "own",
        note: note.value,
      });
      renderHelplines(helplinesLead, helplinesList, helplinesFrom(reply.helplines));
      if (typeof reply.reference === "string" && !known.has(reply.reference)) {
        known.set(reply.reference, "open");
      }
      const words = flaggedWords(reply, { self: true });
      result.replaceChildren(h("p", { className: "support-answer", text: words }));
      result.dataset.tone = reply.on_call === true ? "success" : "warning";
      form.hidden = true;
      note.value = "";
      title.textContent = "Support";
      alertNow(words);
      privateButton.focus();
    } catch (err) {
      // A refused flag (too many at once) is still counted, and carries the helplines.
      if (Array.isArray(err?.frame?.helplines)) {
        renderHelplines(helplinesLead, helplinesList, helplinesFrom(err.frame.helplines));
      }
      result.replaceChildren(
        h("p", {
          className: "error-text",
          text: `${errorSentence(err)} If you need help now, please use the helplines below.`,
        }),
      );
      result.dataset.tone = "error";
    } finally {
      send.disabled = false;
    }
  });

  return {
    mount(s) {
      this.unmount();
      session = s;
      s.conn.addEventListener("authenticated", onAuthenticated);
      renderHelplines(helplinesLead, helplinesList);
    },
    unmount() {
      session?.conn.removeEventListener("authenticated", onAuthenticated);
      session = null;
      known.clear();
      panel.hidden = true;
      form.hidden = true;
      result.replaceChildren();
      updates.replaceChildren();
      hideAlert();
      note.value = "";
      setFieldError(note, noteError, "");
      returnFocusTo = null;
    },
    /** Opens the panel to ask for support (every "I need support now" button). */
    request() {
      if (session) {
        open({ asking: true, focus: true });
      }
    },
    /** Shows a `support_notice` for this group; returns whether it was shown. */
    notice(frame) {
      if (!session || frame.group !== session.groupId) {
        return false;
      }
      const kind = typeof frame.notice === "string" ? frame.notice : "";
      const message = typeof frame.message === "string" ? frame.message.slice(0, 1000) : "";
      renderHelplines(helplinesLead, helplinesList, helplinesFrom(frame.helplines));
      if (typeof frame.reference === "string") {
        const status = kind === "acknowledged" ? "acknowledged" : kind === "resolved" ? "resolved" : known.get(frame.reference) ?? "open";
        known.set(frame.reference, status);
      }
      addUpdate(kind, message);
      return true;
    },
    /** The person was taken out of the group: the private line closes, asking stays. */
    refresh() {
      renderPrivateRow();
    },
  };
}

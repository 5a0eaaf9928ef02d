// "For facilitators": the staff channel — reports (with the message reported),
// risk-phrase nudges from the hub (with a "Check in" button), requests for support
// in this group (`support_asked`: who, how serious, their words where they agreed;
// announced assertively), and declines.
//
// Owns: #staff-panel and its list. Entries are verified like everything else; hub
// nudges are shown as from the hub. New live entries are announced politely.

import { Kind, MAIN, STAFF } from "../protocol.js";
import { alertNow, announce } from "./announcer.js";
import { byId, h } from "./dom.js";
import { createMessageList } from "./message-list.js";
import { createMessageRenderer } from "./message-render.js";
import { isSupportNote, severityWords } from "./support-requests.js";
import { who } from "./who.js";

export function createStaffPanel({ onCheckIn }) {
  const panel = byId("staff-panel");
  const listEl = byId("staff-list");
  const empty = byId("staff-empty");
  let session = null;
  let list = null;

  /** The member a staff entry is about: the nudged writer, or the reported message's writer. */
  function subjectOf(record) {
    if (record.from === "hub" && (record.note?.note === "risk_nudge" || record.note?.note === "support_asked")) {
      return record.note.member;
    }
    if (record.verified && record.kind === Kind.REPORT) {
      const target = session.log(MAIN).get(record.payload.seq);
      return target?.verified && target.kind === Kind.POST ? target.key : null;
    }
    return null;
  }

  function extrasFor(record) {
    const subject = subjectOf(record);
    if (!subject || subject === session.identity.publicKey) {
      return null;
    }
    return h(
      "div",
      { className: "button-row" },
      h("button", {
        type: "button",
        className: "secondary",
        text: `Check in with ${who(session, subject)}`,
        on: { click: () => onCheckIn(subject) },
      }),
    );
  }

  const listeners = {
    event: (ev) => {
      const { record, live } = ev.detail;
      if (record.channel !== STAFF) {
        return;
      }
      list.addEvent(ev.detail, { follow: false });
      if (live && !record.self) {
        if (record.from === "hub" && record.note?.note === "risk_nudge") {
          announce(`For facilitators: a message from ${who(session, record.note.member)} may show someone at risk.`);
        } else if (isSupportNote(record) && record.note.note === "support_asked") {
          // A call for help in the room: it interrupts, like a supervisor's new escalation.
          const note = record.note;
          const how = note.own
            ? `${who(session, note.member, { capital: true })} asked for support`
            : `Someone asked for support for ${who(session, note.member)}`;
          alertNow(`For facilitators: ${how}, ${severityWords(note.severity)}.`);
        } else if (record.verified && record.kind === Kind.REPORT) {
          announce(`For facilitators: ${who(session, record.key)} reported a message.`);
        }
      }
    },
    "event-changed": (ev) => {
      if (ev.detail.record.channel === STAFF) {
        list.updateEvent(ev.detail.record);
      }
    },
  };

  return {
    mount(s) {
      this.unmount();
      session = s;
      list = createMessageList(listEl, empty, { renderer: createMessageRenderer({ session: s, extrasFor }) });
      list.clear();
      for (const [type, fn] of Object.entries(listeners)) {
        s.addEventListener(type, fn);
      }
    },
    unmount() {
      if (session) {
        for (const [type, fn] of Object.entries(listeners)) {
          session.removeEventListener(type, fn);
        }
      }
      session = null;
      list?.clear();
      list = null;
      panel.hidden = true;
    },
    setVisible(visible) {
      panel.hidden = !visible;
    },
    /** Reported messages may have arrived after their reports: draw the staff list again. */
    refresh() {
      if (session && list) {
        list.redrawAll([...session.log(STAFF).values()]);
      }
    },
  };
}

// A facilitator's actions for one member: mute for a time, unmute, remove (for this
// session or for good, with a reason they will read), check in privately, make
// co-facilitator, hand over the lead, raise a distress flag about them (ask a
// supervisor to offer them support). A supervisor or admin in the group (no
// facilitator powers) gets one action: write privately to the person.
//
// Owns: one actions panel per member key, kept between redraws of the people list so
// what a facilitator is typing survives someone else's presence changing. Every action
// is a signed control through the session; the group sees the result as a verified
// sentence in the conversation, and the member's standing arrives as presence.
// Sanctions are not offered against facilitators (the server refuses them).
// Guarded: "Remove" and "Hand over the lead" ask first, in a confirm box that says
// what will happen; hand over and co-facilitator are offered only for staff (never an
// anonymous participant); a mute can be undone at once ("Undo": unmute).

import { MUTE_CHOICES } from "../config.js";
import { Control } from "../protocol.js";
import { isStaffRole } from "../standing.js";
import { minutesWords } from "../time-words.js";
import { h } from "./dom.js";
import { guard } from "./guard.js";
import { runWithStatus } from "./feedback.js";
import { createFlagForm } from "./flag-form.js";
import { who } from "./who.js";

let panelCount = 0;

export function createMemberActions({ session, onCheckIn }) {
  const panels = new Map(); // key -> { wrap, update }

  function build(key) {
    panelCount += 1;
    const id = `member-actions-${panelCount}`;
    const name = () => who(session, key);
    const status = h("p", { className: "hint action-status", attrs: { role: "status" } });
    const send = (button, action, done) => runWithStatus(button, status, () => session.control(action), done);

    const toggle = h("button", {
      type: "button",
      className: "link-button",
      attrs: { "aria-expanded": "false", "aria-controls": id },
    });
    const panel = h("div", { className: "member-actions", id, hidden: true });

    // Check in privately: the control opens the pair channel, then the panel shows it.
    const checkIn = h("button", { type: "button", className: "secondary", text: "Check in privately" });
    checkIn.addEventListener("click", async () => {
      const ok = await send(checkIn, Control.checkIn(key), `A private check-in with ${name()} has started.`);
      if (ok) {
        onCheckIn(key);
      }
    });

    // Mute for a time.
    const minutes = h(
      "select",
      { id: `${id}-minutes` },
      ...MUTE_CHOICES.map((m) => h("option", { value: String(m), text: minutesWords(m), selected: m === 10 })),
    );
    const mute = h("button", { type: "button", className: "secondary", text: "Mute" });
    const undoMute = h("button", { type: "button", className: "link-button undo", text: "Undo", hidden: true });
    mute.addEventListener("click", async () => {
      const m = Number(minutes.value);
      const ok = await send(mute, Control.mute(key, m), `${name()} is muted for ${minutesWords(m)}.`);
      undoMute.hidden = !ok;
    });
    undoMute.addEventListener("click", async () => {
      undoMute.hidden = true;
      await send(undoMute, Control.unmute(key), `Undone: ${name()} can write again.`);
    });
    const muteRow = h(
      "div",
      { className: "action-row" },
      h("label", { attrs: { for: minutes.id }, text: "Mute for" }),
      h("div", { className: "input-row" }, minutes, mute),
      undoMute,
    );
    const unmute = h("button", { type: "button", className: "secondary", text: "Unmute" });
    unmute.addEventListener("click", () => send(unmute, Control.unmute(key), `${name()} can write again.`));

    // Remove, for this session or for good.
    const groupName = `${id}-remove-for`;
    const forSession = h("input", { type: "radio", name: groupName, id: `${id}-session`, value: "session", checked: true });
    const forGood = h("input", { type: "radio", name: groupName, id: `${id}-good`, value: "good" });
    const reason = h("input", { type: "text", id: `${id}-reason`, maxLength: 500, attrs: { "aria-describedby": `${id}-reason-hint` } });
    const remove = h("button", { type: "button", className: "danger", text: "Remove" });
    const removeConfirm = guard(remove, {
      question: () =>
        forSession.checked
          ? `Remove ${name()} from this session? They can't come back until the next one. This can't be undone.`
          : `Remove ${name()} from the group for good? They won't be able to come back. This can't be undone.`,
      yes: "Yes, remove them",
      onYes: () => doRemove(),
    });
    const doRemove = () => {
      const untilSessionEnd = forSession.checked;
      send(
        remove,
        Control.remove(key, untilSessionEnd, reason.value),
        `${name()} has been removed ${untilSessionEnd ? "from this session" : "from the group"}.`,
      ).then((ok) => {
        if (ok) {
          reason.value = "";
        }
      });
    };
    const removeBox = h(
      "fieldset",
      { className: "fieldset action-remove" },
      h("legend", { text: "Remove from the group" }),
      h("div", { className: "check-row" }, forSession, h("label", { attrs: { for: forSession.id }, text: "For this session" })),
      h("div", { className: "check-row" }, forGood, h("label", { attrs: { for: forGood.id }, text: "For good" })),
      h("label", { attrs: { for: reason.id }, text: "Reason (optional)" }),
      h("p", { className: "hint", id: `${id}-reason-hint`, text: "They will read it. Keep it kind and plain." }),
      reason,
      h("div", { className: "button-row" }, remove),
      removeConfirm,
    );

    // Raise a flag: the form opens in place, below the buttons.
    const flagSlot = h("div", { className: "flag-slot" });
    const flag = h("button", { type: "button", className: "secondary", text: "Ask a supervisor to offer support", attrs: { "aria-expanded": "false" } });
    const closeFlag = () => {
      flagSlot.replaceChildren();
      flag.setAttribute("aria-expanded", "false");
      flag.focus();
    };
    flag.addEventListener("click", () => {
      if (flagSlot.firstChild) {
        closeFlag();
        return;
      }
      const form = createFlagForm({
        session,
        about: key,
        name: name(),
        onFlagged: () => {
          status.textContent = `A supervisor has been asked to offer ${name()} support.`;
        },
        onCancel: closeFlag,
      });
      flagSlot.replaceChildren(form.form);
      flag.setAttribute("aria-expanded", "true");
      form.focus();
    });

    const cofac = h("button", { type: "button", className: "secondary", text: "Make co-facilitator" });
    cofac.addEventListener("click", () => send(cofac, Control.addCofacilitator(key), `${name()} is now a co-facilitator.`));
    const handOver = h("button", { type: "button", className: "secondary", text: "Hand over the lead" });
    const handOverConfirm = guard(handOver, {
      question: () =>
        `Hand the lead over to ${name()}? They will run the group, and you will no longer lead it. Only they can hand it back.`,
      yes: `Yes, hand over`,
      onYes: () => send(handOver, Control.handOver(key), `${name()} is now the lead facilitator.`),
    });

    panel.append(
      h("div", { className: "button-row" }, checkIn, flag),
      flagSlot,
      muteRow,
      h("div", { className: "button-row" }, unmute),
      removeBox,
      h("div", { className: "button-row" }, cofac, handOver),
      handOverConfirm,
    );

    const close = () => {
      panel.hidden = true;
      toggle.setAttribute("aria-expanded", "false");
    };
    toggle.addEventListener("click", () => {
      const open = panel.hidden;
      panel.hidden = !open;
      toggle.setAttribute("aria-expanded", String(open));
      if (open) {
        status.textContent = "";
        panel.querySelector("button, select, input")?.focus();
      }
    });
    panel.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") {
        close();
        toggle.focus();
      }
    });

    const wrap = h("div", { className: "member-actions-wrap" }, toggle, status, panel);
    const update = (member) => {
      toggle.textContent = `Actions for ${member.verified ? member.name : "this person"}`;
      const facilitator = member.facilitator || session.isFacilitator(key);
      const muted = Number.isFinite(member.mutedUntilMs) && member.mutedUntilMs > session.conn.clock.now();
      // Leading a group is a staff role: never offered for an anonymous participant.
      const staff = facilitator || (member.verified && isStaffRole(member.roles));
      muteRow.hidden = facilitator;
      unmute.hidden = facilitator || !muted;
      removeBox.hidden = facilitator;
      cofac.hidden = facilitator || !staff;
      handOver.hidden = !staff || session.groupState?.lead === key;
      if (handOver.hidden) {
        handOverConfirm.hidden = true;
      }
    };
    return { wrap, update };
  }

  // A supervisor's (or admin's) only action: the private line, which the hub allows
  // them with anyone in the group.
  function buildPrivateOnly(key) {
    const button = h("button", { type: "button", className: "link-button", text: "Write privately" });
    button.addEventListener("click", () => onCheckIn(key));
    const wrap = h("div", { className: "member-actions-wrap" }, button);
    const update = (member) => {
      button.textContent = `Write privately to ${member.verified ? member.name : "this person"}`;
    };
    return { wrap, update };
  }

  return {
    /** The actions element for a member (null for ourselves, or if we have none). */
    actionsFor(member) {
      if (member.self) {
        return null;
      }
      if (!session.canModerate()) {
        if (!session.isStaff()) {
          return null;
        }
        let entry = panels.get(member.key);
        if (!entry) {
          entry = buildPrivateOnly(member.key);
          panels.set(member.key, entry);
        }
        entry.update(member);
        return entry.wrap;
      }
      let entry = panels.get(member.key);
      if (!entry) {
        entry = build(member.key);
        panels.set(member.key, entry);
      }
      entry.update(member);
      return entry.wrap;
    },
    clear() {
      panels.clear();
    },
  };
}

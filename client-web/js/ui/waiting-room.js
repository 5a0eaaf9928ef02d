// The waiting room, as facilitators see it: who is waiting (or still reading the
// agreement), whether they asked for support and how seriously (support-requests.js),
// with "Let in" and "Decline" (with an optional reason the person reads).
//
// Owns: #waiting-list, #waiting-count, #waiting-empty, and "Clear the waiting room"
// (#waiting-clear, after a plain confirmation). Arrivals are announced through
// the polite live region ("Ash is in the waiting room."), so a facilitator using a
// screen reader hears them without leaving the conversation. Items are kept per key,
// so a half-typed decline reason survives other arrivals.

import { fingerprint } from "../encoding.js";
import { Control, MemberStatus } from "../protocol.js";
import { announce } from "./announcer.js";
import { byId, h } from "./dom.js";
import { runWithStatus } from "./feedback.js";
import { openRequests, requestState } from "./support-requests.js";
import { who } from "./who.js";

let itemCount = 0;

/**
 * Whether a member record belongs in the waiting room rather than the room: not a
 * facilitator, not (yet) let in, and here now — someone from an earlier session who
 * is offline is not waiting for anything.
 */
export function isWaiting(member) {
  if (member.facilitator || !member.online) {
    return false;
  }
  return (
    member.status === MemberStatus.WAITING ||
    (member.status === MemberStatus.NEEDS_AGREEMENT && !member.seenInRoom)
  );
}

export function createWaitingRoom({ onCheckIn }) {
  const list = byId("waiting-list");
  const count = byId("waiting-count");
  const empty = byId("waiting-empty");
  const items = new Map(); // key -> { li, update }
  const clear = byId("waiting-clear");
  const clearConfirm = byId("waiting-clear-confirm");
  const clearYes = byId("waiting-clear-yes");
  const clearNo = byId("waiting-clear-no");
  const clearStatus = byId("waiting-clear-status");
  let session = null;

  const closeConfirm = () => {
    clearConfirm.hidden = true;
    clear.setAttribute("aria-expanded", "false");
  };
  clear.addEventListener("click", () => {
    clearConfirm.hidden = false;
    clear.setAttribute("aria-expanded", "true");
    clearYes.focus();
  });
  clearNo.addEventListener("click", () => {
    closeConfirm();
    clear.focus();
  });
  clearYes.addEventListener("click", async () => {
    if (!session) {
      return;
    }
    await runWithStatus(clearYes, clearStatus, () => session.control(Control.clearWaiting()), "The waiting room has been cleared.");
    closeConfirm();
  });

  function build(key) {
    itemCount += 1;
    const id = `waiting-${itemCount}`;
    const name = () => who(session, key);
    const label = h("p", { className: "waiting-name" });
    const status = h("p", { className: "hint action-status", attrs: { role: "status" } });
    const admit = h("button", { type: "button", text: "Let in" });
    admit.addEventListener("click", () =>
      runWithStatus(admit, status, () => session.control(Control.admit(key)), `${name()} has been let in.`),
    );
    const reason = h("input", { type: "text", id: `${id}-reason`, maxLength: 500, attrs: { "aria-describedby": `${id}-hint` } });
    const declineConfirm = h("button", { type: "button", className: "danger", text: "Decline" });
    const declineCancel = h("button", { type: "button", className: "secondary", text: "Cancel" });
    const declineBox = h(
      "div",
      { className: "confirm", hidden: true },
      h("label", { attrs: { for: reason.id }, text: "Reason (optional)" }),
      h("p", { className: "hint", id: `${id}-hint`, text: "They will read it. Only facilitators see that they were declined." }),
      reason,
      h("div", { className: "button-row" }, declineConfirm, declineCancel),
    );
    const decline = h("button", { type: "button", className: "secondary", text: "Decline…", attrs: { "aria-expanded": "false" } });
    decline.addEventListener("click", () => {
      declineBox.hidden = false;
      decline.setAttribute("aria-expanded", "true");
      reason.focus();
    });
    declineCancel.addEventListener("click", () => {
      declineBox.hidden = true;
      decline.setAttribute("aria-expanded", "false");
      decline.focus();
    });
    declineConfirm.addEventListener("click", () =>
      runWithStatus(declineConfirm, status, () => session.control(Control.decline(key, reason.value)), `${name()} was declined.`),
    );
    const checkIn = h("button", { type: "button", className: "secondary", text: "Check in privately" });
    checkIn.addEventListener("click", async () => {
      const ok = await runWithStatus(checkIn, status, () => session.control(Control.checkIn(key)), `A private check-in with ${name()} has started.`);
      if (ok) {
        onCheckIn(key);
      }
    });
    const support = h("p", { className: "waiting-support", hidden: true });
    const li = h(
      "li",
      { className: "waiting-item" },
      label,
      support,
      h("div", { className: "button-row" }, admit, decline, checkIn),
      declineBox,
      status,
    );
    const update = (member, request) => {
      const state = member.status === MemberStatus.NEEDS_AGREEMENT ? "still reading the agreement" : "has agreed, waiting";
      li.classList.toggle("has-asked-support", Boolean(request));
      support.hidden = !request;
      const asked = requestState(request);
      support.textContent = asked ? `${asked[0].toUpperCase()}${asked.slice(1)}.` : "";
      label.replaceChildren(
        // Names, not keys (issue 15): the key only on request, as the name's tooltip.
        member.verified
          ? h("strong", { text: member.name, attrs: { title: `Key ${fingerprint(key)}` } })
          : h("span", { className: "member-name-unverified", text: `“${member.name}” (name not verified)`, attrs: { title: `Key ${fingerprint(key)}` } }),
        ` ${member.online ? "online" : "offline"}, ${state}`,
      );
    };
    return { li, update };
  }

  function render() {
    const waiting = [...session.members.values()].filter(isWaiting);
    const requests = openRequests(session);
    const keep = new Set();
    for (const member of waiting) {
      let item = items.get(member.key);
      if (!item) {
        item = build(member.key);
        items.set(member.key, item);
        list.append(item.li);
      }
      item.update(member, requests.get(member.key));
      keep.add(member.key);
    }
    for (const [key, item] of items) {
      if (!keep.has(key)) {
        item.li.remove();
        items.delete(key);
      }
    }
    count.textContent = String(waiting.length);
    empty.hidden = waiting.length > 0;
    clear.hidden = waiting.length === 0;
    if (waiting.length === 0) {
      closeConfirm();
    }
  }

  return {
    mount(s) {
      session = s;
      items.clear();
      list.replaceChildren();
      clearStatus.textContent = "";
      closeConfirm();
    },
    unmount() {
      session = null;
      items.clear();
      list.replaceChildren();
    },
    render() {
      if (session) {
        render();
      }
    },
    /** A member's presence changed: announce new arrivals, then redraw. */
    onMember({ record, previous }) {
      if (!session) {
        return;
      }
      if (isWaiting(record) && (!previous || !isWaiting(previous)) && !record.self) {
        announce(`${record.verified ? record.name : "Someone"} is in the waiting room.`);
      }
      render();
    },
  };
}

// Private lines as conversations: one thread per pair channel (a facilitator's
// check-in, a supervisor), each with its own unread count, and one composer.
//
// Owns: #private-panel (a sheet over the conversation on a phone, a column on a
// desktop), its thread buttons, the top bar's "Private" button with the unread
// badge, the notice under the top bar at the moment someone writes ("Sam, a
// supervisor, has written to you privately" — tap to open), the unread count in the
// tab title, and #private-open (unused now: the top bar lists the threads). A message
// or a later check-in never takes the panel over: it counts as unread and is told. Every private message is verified like any
// other (the session does it, with the pair channel's rules); this module draws them
// with the shared renderer, one message list per conversation.
//
// This is the help path: its composer is never disabled by a mute, a pause, slow mode,
// the waiting room or the agreement — only when the person is no longer in the group.

import { sentenceFor } from "../errors.js";
import { pairPeer } from "../protocol.js";
import { announce } from "./announcer.js";
import { createComposer } from "./composer.js";
import { byId, h } from "./dom.js";
import { renderHelplines } from "./helplines.js";
import { createMessageList } from "./message-list.js";
import { createMessageRenderer } from "./message-render.js";
import { facilitatorName, rolesOf, who } from "./who.js";

const BASE_TITLE = "peerhub";

export function createPrivatePanel({ connection }) {
  const panel = byId("private-panel");
  const title = byId("private-title");
  const note = byId("private-note");
  const switcher = byId("private-switch");
  const threads = byId("private-threads");
  const toggle = byId("private-toggle");
  const unreadBadge = byId("private-unread");
  const alertBox = byId("private-alert");
  const alertOpen = byId("private-alert-open");
  let alertPeer = null;
  const logs = byId("private-logs");
  const empty = byId("private-empty");
  const form = byId("private-composer");
  const inputLabel = byId("private-input-label");
  const help = byId("private-helplines");
  const openSection = byId("private-open");
  const openList = byId("private-open-list");
  renderHelplines(byId("private-helplines-lead"), null);

  let session = null;
  let renderer = null;
  let current = null; // peer key shown
  const conversations = new Map(); // peer -> { list, ol, unread }

  const composer = createComposer({
    form,
    textarea: byId("private-input"),
    countEl: byId("private-count"),
    errorEl: byId("private-error"),
    getLimits: () => connection.limits,
    onSend: (body) => {
      if (session && current) {
        session.post(body, { to: current });
      }
    },
  });

  byId("private-close").addEventListener("click", () => close({ returnFocus: true }));
  panel.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && ev.target === title) {
      close({ returnFocus: true });
    }
  });
  toggle.addEventListener("click", () => {
    if (!panel.hidden) {
      close({ returnFocus: false });
      toggle.focus();
      return;
    }
    // The thread with something new first, else the one last shown.
    const unread = [...conversations.entries()].find(([, c]) => c.unread > 0)?.[0];
    open(unread ?? current ?? conversations.keys().next().value ?? null);
  });
  alertOpen.addEventListener("click", () => {
    const peer = alertPeer;
    hideAlert();
    if (peer) {
      open(peer);
    }
  });
  byId("private-alert-dismiss").addEventListener("click", () => {
    hideAlert();
    toggle.focus();
  });

  function hideAlert() {
    alertBox.hidden = true;
    alertPeer = null;
  }

  let returnFocusTo = null;

  function peerName(peer, { capital = false } = {}) {
    if (!session) {
      return "";
    }
    if (session.canModerate() && !session.isFacilitator(peer)) {
      return who(session, peer, { capital });
    }
    if (session.member(peer)?.verified || session.isFacilitator(peer)) {
      return facilitatorName(session, peer, { capital });
    }
    // Not a member, seen from the room: only a supervisor on an escalation's line
    // writes privately without joining (PROTOCOL.md §8.5).
    if (session.inRoom && !session.member(peer)) {
      return capital ? "A supervisor" : "a supervisor";
    }
    // Someone we can't see (we are still waiting): a facilitator or a supervisor.
    return capital ? "Someone from the team" : "someone from the team";
  }

  /** "Sam, a supervisor" / "Jo, a facilitator" / "Someone from the team". */
  function peerWithRole(peer) {
    const name = peerName(peer, { capital: true });
    const roles = session ? rolesOf(session, peer) : [];
    const role = roles.includes("supervisor")
      ? "a supervisor"
      : roles.includes("facilitator")
        ? "a facilitator"
        : roles.includes("admin")
          ? "an admin"
          : "";
    return role && !name.startsWith("Someone") && !name.startsWith("A ") ? `${name}, ${role},` : name;
  }

  function totalUnread() {
    let n = 0;
    for (const c of conversations.values()) {
      n += c.unread;
    }
    return n;
  }

  /** The top bar's button and badge, and the tab title, from the unread counts. */
  function renderCounts() {
    const n = session ? totalUnread() : 0;
    toggle.hidden = !session || conversations.size === 0;
    toggle.setAttribute("aria-expanded", String(!panel.hidden));
    unreadBadge.hidden = n === 0;
    // The number is seen; "new" is said (the top bar is narrow on a phone).
    unreadBadge.replaceChildren(...(n ? [String(n), h("span", { className: "visually-hidden", text: " new" })] : []));
    byId("private-toggle-text").textContent = conversations.size > 1 ? "Private messages" : "Private";
    if (document.title !== "New tab") {
      document.title = n ? `(${n}) ${BASE_TITLE}` : BASE_TITLE;
    }
  }

  function conversation(peer) {
    let c = conversations.get(peer);
    if (!c) {
      const ol = h("ol", { className: "message-list private-list", hidden: true, attrs: { "aria-label": "Private messages" } });
      logs.append(ol);
      c = { ol, list: createMessageList(ol, null, { renderer }), unread: 0 };
      conversations.set(peer, c);
    }
    return c;
  }

  function renderSwitcher() {
    const peers = [...conversations.keys()];
    switcher.hidden = peers.length < 2 || panel.hidden;
    threads.replaceChildren(
      ...peers.map((peer) => {
        const c = conversations.get(peer);
        const label = `${peerName(peer, { capital: true })}${c.unread ? ` (${c.unread} new)` : ""}`;
        return h(
          "li",
          {},
          h("button", {
            type: "button",
            className: "thread-button",
            text: label,
            attrs: peer === current ? { "aria-current": "true" } : {},
            on: { click: () => open(peer) },
          }),
        );
      }),
    );
    openSection.hidden = true;
    openList.replaceChildren();
    renderCounts();
  }

  function show(peer) {
    current = peer;
    const c = peer ? conversation(peer) : null;
    for (const [key, other] of conversations) {
      other.ol.hidden = key !== peer;
    }
    if (c) {
      c.unread = 0;
    }
    if (alertPeer === peer) {
      hideAlert();
    }
    empty.hidden = !c || c.ol.childElementCount > 0;
    const name = peer ? peerName(peer) : "a facilitator";
    title.textContent = peer ? `Private with ${name}` : "Private help";
    inputLabel.textContent = peer ? `Your private message to ${name}` : "Your private message";
    note.textContent = peer
      ? `Only you and ${name} can read these messages. You can write here at any time, even when you can't write to the group.`
      : sentenceFor("no_lead");
    form.hidden = !peer || Boolean(session?.dismissal);
    renderSwitcher();
  }

  /**
   * Opens the conversation with `peer` (null: nobody to write to yet). `prefill` puts
   * words in the composer. Focus goes to the composer (or the heading when there is
   * nobody to write to). The helplines under it stay as they were (showHelplines).
   */
  function open(peer, { prefill = "", focus = true } = {}) {
    if (panel.hidden && focus) {
      returnFocusTo = document.activeElement;
    }
    panel.hidden = false;
    document.body.classList.add("private-open");
    document.body.dataset.front = "private";
    show(peer);
    if (prefill && peer) {
      const textarea = byId("private-input");
      textarea.value = prefill;
    }
    if (focus) {
      if (peer && !session?.dismissal) {
        composer.focus();
      } else {
        title.focus();
      }
    }
  }

  function close({ returnFocus = false } = {}) {
    panel.hidden = true;
    help.hidden = true;
    document.body.classList.remove("private-open");
    renderSwitcher();
    if (returnFocus && returnFocusTo?.isConnected) {
      returnFocusTo.focus();
    }
    returnFocusTo = null;
  }

  const listeners = {
    event: (ev) => {
      const { record, replaces } = ev.detail;
      const peer = pairPeer(record.channel, session.identity.publicKey);
      if (!peer) {
        return;
      }
      const c = conversation(peer);
      c.list.addEvent({ record, replaces }, { follow: true });
      if (peer === current) {
        empty.hidden = true;
      }
      const live = ev.detail.live && !record.self;
      if (!live) {
        renderSwitcher();
        return;
      }
      const opening = record.verified && record.kind === "control";
      const seen = !panel.hidden && peer === current;
      if (!seen) {
        // Never take the panel over (the person may be reading or writing another
        // thread): count it, and say so under the top bar, tap to open.
        c.unread += 1;
        const writer = peerWithRole(peer);
        const words = opening
          ? `${writer} started a private check-in with you.`
          : record.verified
            ? `${writer} has written to you privately.`
            : "A private message came that we couldn't check.";
        alertPeer = peer;
        alertOpen.textContent = `${words} Tap to open.`;
        alertBox.hidden = false;
        announce(`${words} Open it with the Private button at the top.`);
      } else {
        announce(
          record.verified
            ? `Private message from ${peerName(peer, { capital: true })}: ${record.payload.body}`
            : "A private message came that we couldn't check.",
        );
      }
      renderSwitcher();
    },
    "event-changed": (ev) => {
      const peer = pairPeer(ev.detail.record.channel, session.identity.publicKey);
      if (peer) {
        conversation(peer).list.updateEvent(ev.detail.record);
      }
    },
    outbox: (ev) => {
      const entry = ev.detail;
      if (entry.to) {
        conversation(entry.to).list.upsertOutbox(entry);
        if (entry.to === current) {
          empty.hidden = true;
        }
      }
    },
    joined: () => {
      if (current) {
        show(current);
      } else {
        renderSwitcher();
      }
    },
    dismissed: () => {
      form.hidden = true;
      note.textContent = "You can't write here any more. The helplines are there now.";
      help.hidden = false;
    },
  };

  return {
    mount(s) {
      this.unmount();
      session = s;
      renderer = createMessageRenderer({ session: s });
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
      current = null;
      conversations.clear();
      logs.replaceChildren();
      composer.reset();
      panel.hidden = true;
      help.hidden = true;
      openSection.hidden = true;
      openList.replaceChildren();
      returnFocusTo = null;
      hideAlert();
      document.body.classList.remove("private-open");
      renderCounts();
    },
    open,
    close,
    showHelplines() {
      help.hidden = false;
    },
    /** Names may have become known (members changed): redraw the labels. */
    refreshNames() {
      if (session && !panel.hidden) {
        show(current);
      } else if (session) {
        renderSwitcher();
      }
    },
  };
}

// Private check-ins: "Private with <facilitator>", one conversation per pair channel,
// with its own composer.
//
// Owns: #private-panel (and #private-open, the list of private conversations when the
// panel shows another one or is closed). Every private message is verified like any
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
import { facilitatorName, who } from "./who.js";

export function createPrivatePanel({ connection }) {
  const panel = byId("private-panel");
  const title = byId("private-title");
  const note = byId("private-note");
  const switcher = byId("private-switch");
  const select = byId("private-peer");
  const logs = byId("private-logs");
  const empty = byId("private-empty");
  const form = byId("private-composer");
  const inputLabel = byId("private-input-label");
  const help = byId("private-helplines");
  const openSection = byId("private-open");
  const openList = byId("private-open-list");
  renderHelplines(byId("private-helplines-lead"), byId("private-helplines-list"));

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
  select.addEventListener("change", () => show(select.value));

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
    // Someone we can't see (we are still waiting): a facilitator or a supervisor.
    return capital ? "Someone from the team" : "someone from the team";
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
    switcher.hidden = peers.length < 2;
    select.replaceChildren(
      ...peers.map((peer) => h("option", { value: peer, text: peerName(peer, { capital: true }), selected: peer === current })),
    );
    // The list of private conversations, when the panel doesn't show them all.
    const others = peers.filter((peer) => panel.hidden || peer !== current);
    openSection.hidden = others.length === 0;
    openList.replaceChildren(
      ...others.map((peer) => {
        const c = conversations.get(peer);
        const label = `With ${peerName(peer)}${c.unread ? ` (${c.unread} new)` : ""}`;
        return h(
          "li",
          {},
          h("button", { type: "button", className: "link-button", text: label, on: { click: () => open(peer) } }),
        );
      }),
    );
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
      const name = peerName(peer, { capital: true });
      const opening = record.verified && record.kind === "control";
      if (panel.hidden || peer !== current) {
        c.unread += 1;
        if (opening || panel.hidden) {
          // A check-in was started, or a message came while the panel was closed:
          // show it without taking focus from what the person is doing.
          open(peer, { focus: false });
        }
      }
      announce(
        opening
          ? `${name} started a private check-in with you. It's in the private panel.`
          : record.verified
            ? `Private message from ${name}: ${record.payload.body}`
            : "New private message that could not be verified.",
      );
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

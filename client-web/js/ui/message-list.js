// The conversation: the group's events in seq order, then our own posts on their way.
//
// Owns: the <ol> of messages. Events are placed by seq; outbox entries (not yet seen as
// events) always sit after them. When our own event arrives it takes the place of its
// outbox entry. Message text goes in with textContent only. Unverified content is
// never shown as if trusted: it gets a warning, no author name, and its text stays
// hidden until the person asks to see it, inside a box marked "unverified".

import { Delivery } from "../group-session.js";
import { sentenceFor } from "../errors.js";
import { shortTag, fingerprint } from "../encoding.js";
import { formatTime, h, roleLabel } from "./dom.js";
import { unverifiedMark, unverifiedReason, verifiedMark } from "./verification.js";

const DELIVERY_WORDS = {
  [Delivery.QUEUED]: "Waiting to send…",
  [Delivery.SENDING]: "Sending…",
  [Delivery.UNCONFIRMED]: "Connection lost. Checking whether it arrived…",
  [Delivery.WAITING]: "Sending was paused for a moment. It will be sent shortly…",
  [Delivery.ACKNOWLEDGED]: "✓ Delivered",
  [Delivery.FAILED]: "Not sent.",
};

export function createMessageList(listEl, emptyEl, { session }) {
  const eventEls = new Map(); // seq -> li
  const outboxEls = new Map(); // local id -> li
  let unverifiedCount = 0;

  function updateEmpty() {
    emptyEl.hidden = listEl.childElementCount > 0;
  }

  function authorOf(key) {
    const member = session.member(key);
    if (member && member.verified) {
      return { name: member.name, roles: member.roles };
    }
    return null;
  }

  function keyTag(key) {
    return h("span", {
      className: "tag",
      text: shortTag(key),
      attrs: { title: `Key ${fingerprint(key)}`, "aria-label": `key ${fingerprint(key, 4)}` },
    });
  }

  function timeEl(ms) {
    if (!Number.isFinite(ms)) {
      return null;
    }
    return h("time", { dateTime: new Date(ms).toISOString(), text: formatTime(ms) });
  }

  function deliveryLine(entryOrRecord, entry = null) {
    const line = h("p", { className: "msg-delivery" });
    const delivery = entryOrRecord.delivery;
    line.dataset.delivery = delivery;
    line.append(DELIVERY_WORDS[delivery] ?? "");
    if (delivery === Delivery.FAILED && entry) {
      const reason = entry.error ? sentenceFor(entry.error.code) : sentenceFor("send_failed");
      line.append(" ", reason, " ");
      line.append(
        h("button", {
          type: "button",
          className: "link-button",
          text: "Try again",
          on: { click: () => session.retry(entry.localId) },
        }),
        " ",
        h("button", {
          type: "button",
          className: "link-button",
          text: "Discard",
          on: { click: () => session.discard(entry.localId) },
        }),
      );
    }
    return line;
  }

  function renderUnverified(record, summary) {
    unverifiedCount += 1;
    const bodyId = `unverified-${record.seq}-${unverifiedCount}`;
    const text =
      record.payload && typeof record.payload.body === "string"
        ? record.payload.body
        : record.rawPayload;
    const hiddenBody = h("div", {
      className: "msg-body msg-body-unverified",
      id: bodyId,
      hidden: true,
    });
    hiddenBody.append(
      h("p", { className: "unverified-caption", text: "Unverified text, shown as received:" }),
      h("p", { className: "unverified-text", text }),
    );
    const reveal = h("button", {
      type: "button",
      className: "link-button",
      text: "Show the unverified text",
      attrs: { "aria-expanded": "false", "aria-controls": bodyId },
      on: {
        click: () => {
          const open = hiddenBody.hidden;
          hiddenBody.hidden = !open;
          reveal.setAttribute("aria-expanded", String(open));
          reveal.textContent = open ? "Hide the unverified text" : "Show the unverified text";
        },
      },
    });
    return h(
      "li",
      { className: "msg msg-unverified", dataset: { seq: String(record.seq) } },
      h("p", { className: "msg-head" }, unverifiedMark(), " ", h("span", { className: "msg-author", text: summary }), " ", timeEl(record.ts)),
      h("p", { className: "msg-warning", text: `${unverifiedReason(record.reason)} Don't rely on it.` }),
      text ? reveal : null,
      text ? hiddenBody : null,
    );
  }

  function renderPost(record) {
    const author = authorOf(record.key);
    const head = h("p", { className: "msg-head" });
    if (record.self) {
      head.append(h("span", { className: "msg-author", text: "You" }));
    } else if (author) {
      head.append(h("span", { className: "msg-author", text: author.name }));
    } else {
      head.append(h("span", { className: "msg-author msg-author-unknown", text: "Name not verified" }));
    }
    head.append(" ", keyTag(record.key));
    for (const role of author?.roles ?? []) {
      head.append(" ", h("span", { className: `badge badge-${role}`, text: roleLabel(role) }));
    }
    head.append(" ", verifiedMark(), " ", timeEl(record.ts));
    return h(
      "li",
      { className: `msg${record.self ? " msg-self" : ""}`, dataset: { seq: String(record.seq) } },
      head,
      h("p", { className: "msg-body", text: record.payload.body }),
      record.delivery ? deliveryLine(record) : null,
    );
  }

  // Version 1 logs only posts. A later server may log facilitator actions; until this
  // client knows how to show one, it says so and shows nothing of its contents.
  function renderNotice(record) {
    return h(
      "li",
      { className: "msg-notice", dataset: { seq: String(record.seq) } },
      h("span", { text: "A group action that this version of the app can't show. Reloading may help." }),
      " ",
      timeEl(record.ts),
    );
  }

  function renderEvent(record) {
    if (!record.verified) {
      const who = record.kind === "post" ? "Message from an unknown sender" : "Unknown group action";
      return renderUnverified(record, who);
    }
    if (record.kind === "post") {
      return renderPost(record);
    }
    return renderNotice(record);
  }

  function renderOutbox(entry) {
    return h(
      "li",
      { className: "msg msg-self msg-pending", dataset: { localId: String(entry.localId) } },
      h("p", { className: "msg-head" }, h("span", { className: "msg-author", text: "You" }), " ", timeEl(entry.createdAt)),
      h("p", { className: "msg-body", text: entry.body }),
      deliveryLine(entry, entry),
    );
  }

  let newestSeq = 0;

  /** Puts an event element in seq order, before any outbox entries. */
  function insertEventEl(seq, el) {
    let before = null;
    if (seq < newestSeq) {
      // Rare (a resume overlapping what we have): find the next higher seq.
      for (const [otherSeq, otherEl] of eventEls) {
        if (otherSeq > seq && (!before || Number(before.dataset.seq) > otherSeq)) {
          before = otherEl;
        }
      }
    }
    if (!before) {
      before = outboxEls.values().next().value ?? null;
    }
    listEl.insertBefore(el, before);
    newestSeq = Math.max(newestSeq, seq);
  }

  function nearBottom() {
    const doc = document.documentElement;
    return globalThis.innerHeight + globalThis.scrollY >= doc.scrollHeight - 160;
  }

  function reveal(el, force) {
    if (force) {
      el.scrollIntoView({ block: "nearest" });
    }
  }

  return {
    addEvent({ record, replaces }) {
      const follow = nearBottom();
      const el = renderEvent(record);
      if (replaces !== undefined && outboxEls.has(replaces)) {
        outboxEls.get(replaces).remove();
        outboxEls.delete(replaces);
      }
      insertEventEl(record.seq, el);
      eventEls.set(record.seq, el);
      updateEmpty();
      reveal(el, follow || record.self);
    },

    upsertOutbox(entry) {
      const existing = outboxEls.get(entry.localId);
      if (entry.discarded) {
        existing?.remove();
        outboxEls.delete(entry.localId);
        updateEmpty();
        return;
      }
      const el = renderOutbox(entry);
      if (existing) {
        const hadFocus = existing.contains(document.activeElement);
        existing.replaceWith(el);
        if (hadFocus) {
          // Keep keyboard users where they were after pressing "Try again".
          el.tabIndex = -1;
          el.focus();
        }
      } else {
        listEl.appendChild(el);
        reveal(el, true);
      }
      outboxEls.set(entry.localId, el);
      updateEmpty();
    },

    clear() {
      newestSeq = 0;
      listEl.replaceChildren();
      eventEls.clear();
      outboxEls.clear();
      updateEmpty();
    },
  };
}

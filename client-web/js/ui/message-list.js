// A list of one channel's events in seq order, then our own posts on their way.
//
// Owns: one <ol>. Events are placed by seq; outbox entries (not yet seen as events)
// always sit after them. When our own event arrives it takes the place of its outbox
// entry; when a held event changes (a redaction) it is drawn again in place. How each
// item looks is message-render.js's business.

export function createMessageList(listEl, emptyEl, { renderer }) {
  const eventEls = new Map(); // seq -> li
  const outboxEls = new Map(); // local id -> li
  let newestSeq = 0;

  function updateEmpty() {
    if (emptyEl) {
      emptyEl.hidden = listEl.childElementCount > 0;
    }
  }

  /** Puts an event element in seq order, before any outbox entries. */
  function insertEventEl(seq, el) {
    let before = null;
    if (seq < newestSeq) {
      // Rare (a resume overlapping what we have, or a late history): find the next
      // higher seq.
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

  function replaceKeepingFocus(existing, el) {
    const hadFocus = existing.contains(document.activeElement);
    existing.replaceWith(el);
    if (hadFocus) {
      // Keep keyboard users where they were (after "Try again", or a menu action).
      el.tabIndex = -1;
      el.focus();
    }
  }

  return {
    addEvent({ record, replaces }, { follow = nearBottom() } = {}) {
      const el = renderer.renderEvent(record);
      if (replaces !== undefined && outboxEls.has(replaces)) {
        outboxEls.get(replaces).remove();
        outboxEls.delete(replaces);
      }
      insertEventEl(record.seq, el);
      eventEls.set(record.seq, el);
      updateEmpty();
      if (follow || record.self) {
        el.scrollIntoView({ block: "nearest" });
      }
    },

    /** Draws a held event again (it was redacted, or its redaction confirmed). */
    updateEvent(record) {
      const existing = eventEls.get(record.seq);
      if (!existing) {
        return;
      }
      const el = renderer.renderEvent(record);
      replaceKeepingFocus(existing, el);
      eventEls.set(record.seq, el);
    },

    /** Draws every event again (names became known, or our powers changed). */
    redrawAll(records) {
      for (const record of records) {
        this.updateEvent(record);
      }
    },

    upsertOutbox(entry) {
      const existing = outboxEls.get(entry.localId);
      if (entry.discarded) {
        existing?.remove();
        outboxEls.delete(entry.localId);
        updateEmpty();
        return;
      }
      const el = renderer.renderOutbox(entry);
      if (existing) {
        replaceKeepingFocus(existing, el);
      } else {
        listEl.appendChild(el);
        el.scrollIntoView({ block: "nearest" });
      }
      outboxEls.set(entry.localId, el);
      updateEmpty();
    },

    /** The element showing an event, if drawn. */
    elementFor(seq) {
      return eventEls.get(seq) ?? null;
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

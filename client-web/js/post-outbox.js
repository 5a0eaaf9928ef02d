// Our posts on their way to being stored: the outbox of one GroupSession.
//
// Data flow:
//   add() ─► QUEUED ─► (joined, replay complete) ─► signed post ─► SENDING
//         ─► ack ─► ACKNOWLEDGED ─► our own event claims it (leaves the outbox)
//   connection drops after sending ─► UNCONFIRMED ─► after the resume's replay:
//         claimed by its event if it was stored, else settle() signs it again
//
// The retry rule (server semantics, "Resume and retries"): a post sent but not
// acknowledged may or may not be stored. After resuming, look for it (same key and
// counter) among the replayed events; only if it is absent, sign it again with a NEW
// counter and send it again (the old counter may be spent: resending it gives
// `replay`). Every counter an entry was signed with is remembered, so its event is
// recognised whichever attempt was stored.
//
// Owns: the entries and their timers. Asks its session whether posts can go now
// (canSendPosts), tells it about stored and refused posts (onPostStored,
// onPostRefused) and reports every change as the session's "outbox" event.

import { MAX_RESIGN_ATTEMPTS } from "./config.js";
import { Kind, postPayload } from "./protocol.js";

/** Outbox states, in the order a post normally passes through them. */
export const Delivery = Object.freeze({
  QUEUED: "queued", // not sent yet (offline, or waiting for the rejoin)
  SENDING: "sending", // sent, waiting for the ack
  UNCONFIRMED: "unconfirmed", // sent, then the connection dropped: outcome unknown
  WAITING: "waiting", // rate limited or slowed: will be sent again after a pause
  ACKNOWLEDGED: "acknowledged", // the server stored it (ack or our own event seen)
  FAILED: "failed", // refused; the person can try again or discard it
});

export class PostOutbox {
  constructor(session) {
    this.session = session;
    this.entries = new Map(); // local id -> entry
    this.nextLocalId = 1;
    // Counter -> local id for every counter we signed a post with, so our own event
    // can be matched to its entry whichever arrives first.
    this.localIdByCounter = new Map();
  }

  /** Queues a post (`to`: private, in `channel`) and sends it when possible. */
  add(body, to, channel) {
    const entry = {
      localId: this.nextLocalId,
      body,
      to,
      channel,
      counters: [],
      delivery: Delivery.QUEUED,
      seq: null,
      error: null,
      resigns: 0,
      retryTimer: null,
      createdAt: Date.now(),
    };
    this.nextLocalId += 1;
    this.entries.set(entry.localId, entry);
    this.session.emit("outbox", entry);
    this.send(entry);
    return entry;
  }

  retry(localId) {
    const entry = this.entries.get(localId);
    if (entry && entry.delivery === Delivery.FAILED) {
      entry.resigns = 0;
      this.send(entry);
    }
  }

  discard(localId) {
    const entry = this.entries.get(localId);
    if (entry && entry.delivery === Delivery.FAILED) {
      this.entries.delete(localId);
      this.session.emit("outbox", { ...entry, discarded: true });
    }
  }

  /**
   * Our own verified post arrived as an event: if it was one of ours, it leaves the
   * outbox (it is stored, whether or not its ack came yet). Returns the local id it
   * replaces, if any, and marks the record delivered.
   */
  claim(record) {
    const localId = this.localIdByCounter.get(record.payload.counter);
    const entry = localId !== undefined ? this.entries.get(localId) : undefined;
    if (!entry) {
      return undefined;
    }
    clearTimeout(entry.retryTimer);
    this.entries.delete(localId);
    record.delivery = Delivery.ACKNOWLEDGED;
    return localId;
  }

  /** The replay is complete: what is still unconfirmed or queued was not stored. */
  settle() {
    for (const entry of [...this.entries.values()]) {
      if (entry.delivery === Delivery.UNCONFIRMED || entry.delivery === Delivery.QUEUED) {
        this.send(entry);
      }
    }
  }

  /** Sends now what was waiting because of `code` (slow mode was turned off). */
  sendWaiting(code) {
    for (const entry of this.entries.values()) {
      if (entry.delivery === Delivery.WAITING && entry.error?.code === code) {
        this.send(entry);
      }
    }
  }

  /** Nothing more can be sent (we were taken out of the group). */
  failAll(error) {
    for (const entry of this.entries.values()) {
      clearTimeout(entry.retryTimer);
      if (entry.delivery !== Delivery.ACKNOWLEDGED) {
        entry.error = error;
        this.setDelivery(entry, Delivery.FAILED);
      }
    }
  }

  stopTimers() {
    for (const entry of this.entries.values()) {
      clearTimeout(entry.retryTimer);
    }
  }

  async send(entry) {
    clearTimeout(entry.retryTimer);
    const session = this.session;
    if (!session.canSendPosts()) {
      // settle() sends it once joined again and the history is complete.
      if (entry.delivery !== Delivery.UNCONFIRMED) {
        this.setDelivery(entry, Delivery.QUEUED);
      }
      return;
    }
    this.setDelivery(entry, Delivery.SENDING);
    let signed = false;
    try {
      const ack = await session.conn.signedRequest(
        "post",
        Kind.POST,
        (counter, ts) => postPayload(session.groupId, entry.body, entry.to, counter, ts),
        { group: session.groupId },
        (counter) => {
          signed = true;
          entry.counters.push(counter);
          this.localIdByCounter.set(counter, entry.localId);
        },
      );
      session.onPostStored(entry);
      if (this.entries.has(entry.localId)) {
        entry.seq = Number.isSafeInteger(ack.seq) ? ack.seq : null;
        this.setDelivery(entry, Delivery.ACKNOWLEDGED);
      }
      // If our event came first, the entry has left the outbox already and the event
      // record says it is stored.
    } catch (err) {
      if (!this.entries.has(entry.localId)) {
        return; // our event arrived meanwhile: it was stored after all
      }
      this.onSendFailed(entry, err, signed);
    }
  }

  onSendFailed(entry, err, signed) {
    switch (err.code) {
      case "disconnected":
        // Sent, no answer: maybe stored. Decided after the resume.
        this.setDelivery(entry, signed ? Delivery.UNCONFIRMED : Delivery.QUEUED);
        return;
      case "not_connected":
      case "shutting_down":
        this.setDelivery(entry, Delivery.QUEUED);
        return;
      case "not_joined":
        // Refused, so nothing was stored; rejoining sends it again.
        this.setDelivery(entry, Delivery.QUEUED);
        this.session.onPostRefused(entry, err);
        return;
      case "replay":
      case "stale":
        // Another tab used a higher counter first, or the clock moved: a refused post
        // changed nothing, so sign it again with a new counter and time.
        if (entry.resigns < MAX_RESIGN_ATTEMPTS) {
          entry.resigns += 1;
          this.send(entry);
          return;
        }
        break;
      case "internal":
      case "storage_unavailable":
      case "shutting_down":
        // Nothing happened on the server; try again a little later (PROTOCOL.md §10.7).
        // In a cluster this is also what a post meets while its group moves to
        // another node: served again within seconds.
        if (entry.resigns < MAX_RESIGN_ATTEMPTS) {
          entry.resigns += 1;
          entry.error = err;
          this.setDelivery(entry, Delivery.WAITING);
          entry.retryTimer = setTimeout(() => this.send(entry), 1000 * 2 ** entry.resigns);
          return;
        }
        break;
      case "slow_mode":
      case "rate_limited": {
        // Refused for now; it goes by itself once the wait is over.
        const wait = err.retryAfterMs ?? 2000;
        entry.error = err;
        this.setDelivery(entry, Delivery.WAITING);
        this.session.onPostRefused(entry, err);
        entry.retryTimer = setTimeout(() => this.send(entry), wait);
        return;
      }
      default:
        this.session.onPostRefused(entry, err);
        break;
    }
    entry.error = err;
    this.setDelivery(entry, Delivery.FAILED);
  }

  setDelivery(entry, delivery) {
    entry.delivery = delivery;
    if (delivery !== Delivery.FAILED && delivery !== Delivery.WAITING) {
      entry.error = null;
    }
    this.session.emit("outbox", entry);
  }
}

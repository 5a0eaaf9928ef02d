// The highest counter seen from each sender, kept across reloads, so a message sent
// again later (a replay) is noticed even after the page was reloaded.
//
// Why it works: the hub accepts a key's counters only in increasing order, and gives
// each accepted event the next seq of its channel, so within one channel a sender's
// counters grow with seq. A message at a higher seq with a counter not above the
// highest already seen (at a lower seq) is old — sent again. The same message coming
// back at its own seq (history after a reload) has the same (seq, counter) and is fine.
//
// Limits: per group at most MAX_SENDERS entries (channel, key), at most MAX_GROUPS
// groups; the least recently used go first. Forgotten entries only weaken the check
// back to what one page knows. A session-only group uses a memory store, so nothing of
// it is written.
//
// Owns: store key "seen" ({ [group id]: { used, senders: { "channel key": [seq,
// counter, used] } } }). Never stores messages.

const KEY = "seen";
export const MAX_SENDERS = 512;
export const MAX_GROUPS = 64;
const WRITE_DELAY_MS = 300;

/**
 * How far a message's signed time may be from the hub's time for it before the message
 * is marked. The hub refuses a signed time more than 120 s from its clock when it
 * accepts a message (max_clock_skew_ms), so an honest message is always within that;
 * 5 minutes leaves room for a changed skew setting and a slow write, and still catches
 * an old message presented as new.
 */
export const SIGNED_TIME_TOLERANCE_MS = 5 * 60 * 1000;

export class SeenCounters {
  constructor(store, groupId) {
    this.store = store;
    this.groupId = groupId;
    this.senders = new Map(); // "channel key" -> [seq, counter, used]
    this.timer = null;
    this.ready = this.load();
  }

  async load() {
    try {
      const mine = ((await this.store.get(KEY)) ?? {})[this.groupId]?.senders ?? {};
      for (const [id, v] of Object.entries(mine)) {
        if (Array.isArray(v) && Number.isSafeInteger(v[0]) && Number.isSafeInteger(v[1])) {
          this.senders.set(id, v);
        }
      }
    } catch {
      // nothing kept: the page's own check still holds
    }
  }

  /**
   * Whether (seq, counter) from `key` in `channel` is fresh against what was seen
   * before; remembers it if it is the newest from that sender.
   */
  check(channel, key, seq, counter) {
    const id = `${channel} ${key}`;
    const prev = this.senders.get(id);
    let fresh = true;
    if (prev) {
      const [prevSeq, prevCounter] = prev;
      if (seq === prevSeq) {
        fresh = counter === prevCounter;
      } else if (seq > prevSeq) {
        fresh = counter > prevCounter;
      } else {
        fresh = counter < prevCounter;
      }
    }
    if (fresh && (!prev || seq > prev[0])) {
      this.senders.delete(id); // re-insert: the Map's order is least recently used first
      this.senders.set(id, [seq, counter, Date.now()]);
      while (this.senders.size > MAX_SENDERS) {
        this.senders.delete(this.senders.keys().next().value);
      }
      this.schedule();
    }
    return fresh;
  }

  schedule() {
    if (this.timer) {
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      this.save();
    }, WRITE_DELAY_MS);
  }

  save() {
    const senders = Object.fromEntries(this.senders);
    const group = this.groupId;
    return this.store
      .update(KEY, (all) => {
        const next = { ...(all ?? {}), [group]: { used: Date.now(), senders } };
        const groups = Object.keys(next).sort((a, b) => (next[a]?.used ?? 0) - (next[b]?.used ?? 0));
        for (const old of groups.slice(0, Math.max(0, groups.length - MAX_GROUPS))) {
          delete next[old];
        }
        return next;
      })
      .catch(() => {});
  }
}

// Per-key counters: every signed payload (except auth) carries one, and the server
// refuses any counter not greater than the last it accepted from this key, in any
// group, on any connection.
//
// The next counter is max(last + 1, server's last + 1, now in microseconds):
//   - `last` is kept in the store and advanced in one readwrite transaction, so two
//     tabs of this browser never take the same number;
//   - the server's last (`auth_ok.counter`) covers a browser whose store was cleared
//     while the key survived, or another device using the same key;
//   - microseconds of the local clock keep counters growing across devices without
//     coordination (Date.now() * 1000 stays below 2^53 until the year 2255).
//
// Owns: allocation only. Tabs can still send their counters to the server out of
// order (tab A takes n, tab B takes n + 1 and is faster); the server then answers
// `replay` and the sender signs again with a fresh counter (see group-session.js).

const COUNTER_KEY = "counter";

export class CounterSource {
  constructor(store) {
    this.store = store;
    this.serverFloor = 0;
  }

  /** Remembers the last counter the server accepted from this key (`auth_ok`). */
  observeServerCounter(counter) {
    if (Number.isSafeInteger(counter) && counter > this.serverFloor) {
      this.serverFloor = counter;
    }
  }

  /** Takes the next counter; resolves to a safe integer. */
  async next() {
    const serverFloor = this.serverFloor;
    const floor = Date.now() * 1000;
    return this.store.update(COUNTER_KEY, (last) => {
      const previous = Number.isSafeInteger(last) ? last : 0;
      return Math.max(previous + 1, serverFloor + 1, floor);
    });
  }
}

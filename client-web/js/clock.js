// The server's idea of "now", for the `ts` every signed payload carries.
//
// The server refuses a payload whose `ts` is more than max_clock_skew_ms (120 s) from
// its own clock. Phones and shared computers are often minutes off, so the client
// measures the offset from `hello.server_time` on every connection and signs with the
// corrected time. The offset includes half a round trip of latency at most, which is
// far inside the allowed window.
//
// Owns: the offset. Never used for counters (see counters.js), which only need to
// grow.

export class ServerClock {
  constructor() {
    this.offsetMs = 0;
  }

  /** Records the server time from a `hello` frame that arrived just now. */
  observe(serverTimeMs) {
    if (Number.isFinite(serverTimeMs) && serverTimeMs > 0) {
      this.offsetMs = serverTimeMs - Date.now();
    }
  }

  /** Milliseconds since the Unix epoch by the server's clock, as an integer. */
  now() {
    return Math.round(Date.now() + this.offsetMs);
  }
}

// Settings of this client that a deployment might want to change, in one place.

/** The WebSocket endpoint: the same host that served this page, at /ws. */
export function socketUrl(loc = globalThis.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws`;
}

/**
 * Where "Quick exit" goes. `location.replace` swaps it in for this page, so Back does
 * not return here. The default is a blank page served with the client (no outside
 * request, works offline); a deployment may prefer an ordinary public site such as a
 * weather page, which looks less out of place in the address bar.
 */
export const QUICK_EXIT_URL = "exit.html";

/** Two presses of Escape within this many milliseconds trigger quick exit. */
export const QUICK_EXIT_DOUBLE_ESCAPE_MS = 800;

/** Reconnect backoff (PROTOCOL.md §10.5): first delay, ceiling, share of random jitter. */
export const RECONNECT_BASE_MS = 500;
export const RECONNECT_MAX_MS = 30_000;
export const RECONNECT_JITTER = 0.3;

/** A connection that has not logged in this long after opening is dropped and retried. */
export const AUTH_TIMEOUT_MS = 15_000;

/**
 * A request with no answer after this long is taken as a sign the connection is dead
 * (a browser cannot send WebSocket pings): the socket is closed and resumed.
 */
export const REQUEST_TIMEOUT_MS = 30_000;

/** How often a post refused as `replay` or `stale` is re-signed before giving up. */
export const MAX_RESIGN_ATTEMPTS = 3;

/**
 * After rejoining, the client waits for the replayed history to reach the `head` the
 * server announced before deciding which unacknowledged posts to send again. If the
 * history stops short (for example because of retention), it decides after this long.
 */
export const RESUME_SETTLE_TIMEOUT_MS = 10_000;

/**
 * Helplines shown only until the hub sends its own (every `coverage`, `flagged` and
 * `support_notice` frame carries the configured list, which replaces this one). Same
 * shape as the protocol's `Helpline`.
 */
export const FALLBACK_HELPLINES = [
  { name: "Emergency services", contact: "999", hours: "24 hours", nation: "UK", emergency: true },
  { name: "NHS 111 (press 2 for mental health)", contact: "111", hours: "24 hours", nation: "England", emergency: false },
  { name: "Samaritans", contact: "116 123", hours: "24 hours", nation: "UK", emergency: false },
];

/** The words "I need support now" writes in for the person, to send or change. */
export const SUPPORT_MESSAGE = "I need support now";

/** How often the supervisor console redraws deadlines and waiting times. */
export const COUNTDOWN_TICK_MS = 1000;

/** How often the on-call indicator re-reads the rota (windows start and end). */
export const ROTA_REFRESH_MS = 60_000;

/** How often the staff console sounds its alarm again while an escalation waits. */
export const ALARM_REPEAT_MS = 30_000;

/** Default length of a new rota window an admin adds, in hours. */
export const ROTA_DEFAULT_HOURS = 8;

/** Mute lengths a facilitator picks from, in minutes. */
export const MUTE_CHOICES = [5, 10, 15, 30, 60, 120, 1440];

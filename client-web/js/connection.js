// The WebSocket to the hub: hello and login, request ids, signed requests in counter
// order, and reconnecting with backoff.
//
// Data flow:
//   socket ─► hello ─► sign auth (challenge, corrected ts) ─► auth_ok ─► "authenticated"
//   reply with our id ─► resolves / rejects the request's promise
//   event, presence, joined / group_update / dismissed (pushes) ─► "push"
//   records (reply or push) ─► "records"   shutdown ─► "shutdown"
//   coverage ─► "coverage"   escalation (push) ─► "escalation"   support_notice ─► "support"
//   escalations (pushed at login: the queue's first page) ─► "escalations"
//   error without id ─► "server-error"
//
// Owns: the socket, the pending-request table and the reconnect timer. It does not
// know about groups: whoever needs to rejoin after a reconnect listens for
// "authenticated" (group-session.js does).
//
// In a cluster it may know several nodes (setUrls: this page's own first, then the
// others, nodes.js). When the socket closes in a way that means "this node is gone"
// (NODE_GONE below: shutdown, a lost or refused connection, no answer in time),
// the next try goes to the next node, round and round, with
// the same backoff; a node that answers is kept. One URL: as before.
//
// Events (CustomEvent, detail in brackets):
//   "status"        { status, retryAt? }   connecting | connected | reconnecting | closed
//   "authenticated" { key, roles, counter } after every successful login
//   "push"          frame                 event, presence, group_update, dismissed, and
//                                         joined without an id (admitted from the
//                                         waiting room), in arrival order
//   "records"       frame                 every `records` frame, reply or push
//   "coverage"      frame                 whether a supervisor is on call, with the
//                                         helplines (after login and on every change)
//   "escalation"    frame                 an escalation changed (supervisors, admins)
//   "support"       frame                 a `support_notice`: how a request for support
//                                         is going, for the people it concerns
//   "shutdown"      { reason }            the server is stopping (it will close 1001)
//   "server-error"  frame                 error frames that answer no pending request
//   "fatal"         { code }              this client cannot talk to this server, or the
//                                         server closed for a policy reason; no automatic
//                                         reconnect follows (reconnectNow() tries again)

import {
  AUTH_TIMEOUT_MS,
  RECONNECT_BASE_MS,
  RECONNECT_JITTER,
  RECONNECT_MAX_MS,
  REQUEST_TIMEOUT_MS,
} from "./config.js";
import {
  authPayload,
  clientFrame,
  DEFAULT_LIMITS,
  frameBytes,
  Kind,
  PROTOCOL_VERSION,
  signEnvelope,
} from "./protocol.js";

export const Status = Object.freeze({
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

// WebSocket close codes the server uses (see PROTOCOL.md / server semantics).
const CLOSE_NORMAL = 1000;
const CLOSE_POLICY = 1008;
const CLOSE_TOO_BIG = 1009;
const CLOSE_SLOW_CONSUMER = 4001;
const CLOSE_DEAD = 4000; // ours: no answer in time, start again

// Closes after which the next try goes to another node (when there is one):
// 1001 the server is stopping; 1006 no close frame (the network or the node went,
// a kill, or the connection was refused); 1011-1014 server error, restart, try later,
// bad gateway; 4000 ours, no answer in time. The others come back to the same node,
// which is alive: 4001 (a slow member, or the group moved from a failed or fenced
// node: this node serves it from its new one), 4002 and 4003 (this page was asleep).
const NODE_GONE = new Set([1001, 1006, 1011, 1012, 1013, 1014, CLOSE_DEAD]);

/** A request the server refused, or one that could not complete. */
export class RequestError extends Error {
  constructor(code, frame = null) {
    super(frame?.message || code);
    this.code = code;
    this.frame = frame;
  }

  get retryAfterMs() {
    return Number.isFinite(this.frame?.retry_after_ms) ? this.frame.retry_after_ms : null;
  }
}

export class Connection extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.url        ws(s)://host/ws (this page's node; setUrls adds others)
   * @param {object} options.identity   from keys.loadOrCreateIdentity
   * @param {object} options.counters   a CounterSource
   * @param {object} options.clock      a ServerClock
   * @param {Function} [options.WebSocketImpl] for tests
   */
  constructor({ url, identity, counters, clock, WebSocketImpl = globalThis.WebSocket }) {
    super();
    this.url = url;
    this.urls = [url];
    this.identity = identity;
    this.counters = counters;
    this.clock = clock;
    this.WebSocketImpl = WebSocketImpl;

    this.socket = null;
    this.status = Status.CLOSED;
    this.authenticated = false;
    this.key = null;
    this.roles = [];
    this.limits = { ...DEFAULT_LIMITS };

    this.nextId = 1;
    // Request id -> { resolve, reject, timer }. Filled when a frame with an id is
    // sent, emptied by its reply or error, or (all at once) when the socket closes.
    this.pending = new Map();
    // Signed requests are signed and sent one at a time, so that counters leave this
    // tab in increasing order (the server refuses a counter below one it accepted).
    this.signingChain = Promise.resolve();

    this.stopped = true;
    this.attempt = 0;
    this.reconnectTimer = null;
    this.authTimer = null;

    this.paused = false; // set after a policy close: only a person's click reconnects
    this.onOnline = () => this.wake();
  }

  /**
   * The nodes this connection may use, in order (this page's own first). The node
   * in use stays in use if it is listed; otherwise the next try starts at the first.
   */
  setUrls(urls) {
    const list = urls.filter((u) => typeof u === "string" && u);
    if (list.length === 0) {
      return;
    }
    this.urls = list;
    if (!list.includes(this.url) && !this.socket) {
      this.url = list[0];
    }
  }

  /** The next try goes to the node after this one (the same one when there is one). */
  moveOn() {
    const at = this.urls.indexOf(this.url);
    this.url = this.urls[(at + 1) % this.urls.length];
  }

  /** Opens the connection and keeps it open until close(). */
  start() {
    if (!this.stopped) {
      return;
    }
    this.stopped = false;
    globalThis.addEventListener?.("online", this.onOnline);
    this.open();
  }

  /** Closes for good (quick exit, leaving the page): no reconnect. */
  close() {
    this.stopped = true;
    globalThis.removeEventListener?.("online", this.onOnline);
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.authTimer);
    if (this.socket) {
      try {
        this.socket.close(CLOSE_NORMAL, "client closed");
      } catch {
        // already closing
      }
    }
    this.dropSocket("not_connected");
    this.setStatus(Status.CLOSED);
  }

  /** The network came back or the tab woke up: retry now, unless paused by policy. */
  wake() {
    if (!this.paused) {
      this.reconnectNow();
    }
  }

  /** If waiting to reconnect, try at once (also after a policy close: a person asked). */
  reconnectNow() {
    if (!this.stopped && !this.socket) {
      this.paused = false;
      clearTimeout(this.reconnectTimer);
      this.attempt = 0;
      this.open();
    }
  }

  /**
   * Logs in again under another key (identities.js: one key per group). The socket
   * is closed and a new one opened at once; resolves after the login with `identity`.
   * Whoever needs to rejoin listens for "authenticated", as after any reconnect.
   */
  useIdentity(identity) {
    if (this.identity?.publicKey === identity.publicKey) {
      this.identity = identity;
      return this.authenticated ? Promise.resolve() : this.nextLogin(identity);
    }
    this.identity = identity;
    this.roles = [];
    this.key = null;
    const waiting = this.nextLogin(identity);
    if (this.socket) {
      try {
        this.socket.close(CLOSE_NORMAL, "another key");
      } catch {
        // already closing
      }
      this.dropSocket("disconnected");
    }
    if (!this.stopped && !this.paused) {
      clearTimeout(this.reconnectTimer);
      this.attempt = 0;
      this.open();
    }
    return waiting;
  }

  nextLogin(identity) {
    return new Promise((resolve) => {
      const onLogin = (ev) => {
        if (ev.detail.key === identity.publicKey) {
          this.removeEventListener("authenticated", onLogin);
          resolve();
        }
      };
      this.addEventListener("authenticated", onLogin);
    });
  }

  /**
   * Sends an unsigned request (e.g. leave) and resolves with its reply frame, or
   * rejects with a RequestError.
   */
  request(type, fields = {}) {
    if (!this.authenticated) {
      return Promise.reject(new RequestError("not_connected"));
    }
    return this.sendWithId(type, fields);
  }

  /**
   * Takes a counter, signs `makePayload(counter, ts)` as `kind` and sends it as a
   * `type` frame with `fields` (group, after, ...) beside `env`. Resolves with the
   * reply frame. `onSigned(counter)` is called once the envelope is made, before it
   * is sent, so callers can recognise their own envelope later.
   */
  signedRequest(type, kind, makePayload, fields = {}, onSigned = () => {}) {
    let reply;
    const sent = this.signingChain.then(async () => {
      if (!this.authenticated) {
        throw new RequestError("not_connected");
      }
      const counter = await this.counters.next();
      const env = await signEnvelope(this.identity, kind, makePayload(counter, this.clock.now()));
      onSigned(counter);
      if (!this.authenticated) {
        throw new RequestError("not_connected");
      }
      reply = this.sendWithId(type, { ...fields, env });
    });
    // The chain continues whatever happens to this request.
    this.signingChain = sent.catch(() => {});
    return sent.then(() => reply);
  }

  // ---- internals ----

  sendWithId(type, fields) {
    const id = this.nextId;
    this.nextId += 1;
    const text = JSON.stringify(clientFrame(type, id, fields));
    if (frameBytes(text) > this.limits.max_frame_bytes) {
      // The server would refuse it; say so without spending the round trip.
      return Promise.reject(new RequestError("too_large"));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.declareDead(), REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      try {
        this.socket.send(text);
      } catch {
        this.pending.delete(id);
        clearTimeout(timer);
        reject(new RequestError("not_connected"));
      }
    });
  }

  open() {
    this.setStatus(this.attempt === 0 && !this.everConnected ? Status.CONNECTING : Status.RECONNECTING);
    let socket;
    try {
      socket = new this.WebSocketImpl(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onmessage = (msg) => {
      if (this.socket === socket) {
        this.onText(msg.data);
      }
    };
    socket.onclose = (ev) => {
      if (this.socket === socket) {
        this.onClosed(ev.code);
      }
    };
    // Errors are always followed by close; nothing to do here.
    socket.onerror = () => {};
    clearTimeout(this.authTimer);
    this.authTimer = setTimeout(() => {
      if (this.socket === socket && !this.authenticated) {
        this.declareDead();
      }
    }, AUTH_TIMEOUT_MS);
  }

  onText(data) {
    if (typeof data !== "string") {
      return; // the protocol uses text frames only
    }
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== "object" || typeof frame.type !== "string") {
      return;
    }
    if (frame.type === "hello") {
      this.onHello(frame);
      return;
    }
    if (frame.type === "records") {
      // Records are about a person, not a group: whoever keeps them hears every list,
      // whichever request (or push) brought it.
      this.emit("records", frame);
    }
    if (Number.isSafeInteger(frame.id) && this.pending.has(frame.id)) {
      const waiter = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      clearTimeout(waiter.timer);
      if (frame.type === "error") {
        waiter.reject(new RequestError(typeof frame.code === "string" ? frame.code : "", frame));
      } else {
        waiter.resolve(frame);
      }
      return;
    }
    switch (frame.type) {
      case "event":
      case "presence":
      case "group_update":
      case "dismissed":
      case "joined":
        this.emit("push", frame);
        break;
      case "coverage":
        this.emit("coverage", frame);
        break;
      case "escalation":
        this.emit("escalation", frame);
        break;
      case "escalations":
        // The queue's first page, pushed (without id) at login.
        this.emit("escalations", frame);
        break;
      case "support_notice":
        this.emit("support", frame);
        break;
      case "shutdown":
        this.emit("shutdown", { reason: typeof frame.reason === "string" ? frame.reason : "" });
        break;
      case "error":
        this.emit("server-error", frame);
        break;
      default:
        // A reply to a request we gave up on, or a frame type from a newer server.
        break;
    }
  }

  async onHello(hello) {
    if (hello.protocol !== PROTOCOL_VERSION) {
      this.emit("fatal", { code: "protocol_version" });
      this.close();
      return;
    }
    this.clock.observe(hello.server_time);
    if (hello.limits && typeof hello.limits === "object") {
      this.limits = { ...DEFAULT_LIMITS, ...hello.limits };
    }
    const socket = this.socket;
    try {
      const env = await signEnvelope(
        this.identity,
        Kind.AUTH,
        authPayload(String(hello.challenge), this.clock.now()),
      );
      if (this.socket !== socket) {
        return;
      }
      // Auth goes out before the connection counts as authenticated, so it bypasses
      // request(); its reply comes back through the same pending table.
      const ok = await this.sendWithId("auth", { env });
      if (this.socket !== socket || ok.type !== "auth_ok") {
        return;
      }
      clearTimeout(this.authTimer);
      this.authenticated = true;
      this.everConnected = true;
      this.attempt = 0;
      this.key = ok.key;
      this.roles = Array.isArray(ok.roles) ? ok.roles : [];
      this.counters.observeServerCounter(ok.counter);
      this.setStatus(Status.CONNECTED);
      this.emit("authenticated", { key: ok.key, roles: this.roles, counter: ok.counter });
    } catch {
      // Login refused or the socket went away: start again with a fresh challenge.
      if (this.socket === socket) {
        this.declareDead();
      }
    }
  }

  /** Treats the socket as dead: close it and go through the normal reconnect path. */
  declareDead() {
    const socket = this.socket;
    if (!socket) {
      return;
    }
    try {
      socket.close(CLOSE_DEAD, "no answer");
    } catch {
      // ignore
    }
    this.onClosed(CLOSE_DEAD);
  }

  onClosed(code) {
    this.dropSocket("disconnected");
    if (this.stopped) {
      this.setStatus(Status.CLOSED);
      return;
    }
    if (code === CLOSE_POLICY || code === CLOSE_TOO_BIG) {
      // The server refused how this client behaved; reconnecting by itself would only
      // repeat it (PROTOCOL.md §3). The person can try again by hand.
      this.paused = true;
      this.setStatus(Status.CLOSED);
      this.emit("fatal", { code: code === CLOSE_POLICY ? "closed_policy" : "closed_too_big" });
      return;
    }
    if (code === CLOSE_SLOW_CONSUMER) {
      this.attempt = 0; // we fell behind; come straight back and resume
    }
    if (NODE_GONE.has(code)) {
      this.moveOn();
    }
    this.scheduleReconnect();
  }

  dropSocket(code) {
    if (this.socket) {
      this.socket.onmessage = null;
      this.socket.onclose = null;
      this.socket.onerror = null;
    }
    this.socket = null;
    this.authenticated = false;
    clearTimeout(this.authTimer);
    const waiters = [...this.pending.values()];
    this.pending.clear();
    for (const waiter of waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(new RequestError(code));
    }
  }

  scheduleReconnect() {
    const base = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** this.attempt);
    const jitter = 1 - RECONNECT_JITTER + Math.random() * RECONNECT_JITTER * 2;
    const delay = Math.round(base * jitter);
    this.attempt = Math.min(this.attempt + 1, 16);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.open(), delay);
    this.setStatus(Status.RECONNECTING, { retryAt: Date.now() + delay });
  }

  setStatus(status, extra = {}) {
    this.status = status;
    this.emit("status", { status, ...extra });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// One joined group, as this tab sees it: members, the verified event log, and our own
// posts on their way to being acknowledged.
//
// Data flow:
//   join() ─► signed join ─► `joined` (members, head) ─► history `event`s ─► live `event`s
//   post() ─► outbox ─► signed post ─► `ack` (durable, has a seq) ─► our own `event`
//   reconnect ─► "authenticated" ─► signed join with after = highest seq seen
//             ─► replayed events ─► settle the outbox (the retry rule below)
//
// Every envelope is verified here before anything else sees it; records carry
// `verified` and, when false, a `reason`. Incoming frames are handled one at a time in
// arrival order (verification is asynchronous), so the log and the outbox never race.
//
// The retry rule (server semantics, "Resume and retries"): a post sent but not
// acknowledged may or may not be stored. After resuming, look for it (same key and
// counter) among the replayed events; only if it is absent, sign it again with a NEW
// counter and send it again.
//
// Owns: this group's state. Never touches the DOM; the UI listens to its events:
//   "state"    { state, error? }   joining | joined | rejoining | failed | left
//   "joined"   { info, members, resumed }
//   "member"   member record
//   "event"    { record, live, replaces? }   replaces = outbox id it supersedes
//   "outbox"   outbox record (added or changed)
//   "notice"   { code, frame? }   something a person should hear about

import { MAX_RESIGN_ATTEMPTS, RESUME_SETTLE_TIMEOUT_MS } from "./config.js";
import { HISTORY_ON_JOIN, Kind, joinPayload, postPayload, verifyEnvelope } from "./protocol.js";

export const SessionState = Object.freeze({
  IDLE: "idle",
  JOINING: "joining",
  JOINED: "joined",
  REJOINING: "rejoining",
  FAILED: "failed",
  LEFT: "left",
});

/** Outbox states, in the order a post normally passes through them. */
export const Delivery = Object.freeze({
  QUEUED: "queued", // not sent yet (offline, or waiting for the rejoin)
  SENDING: "sending", // sent, waiting for the ack
  UNCONFIRMED: "unconfirmed", // sent, then the connection dropped: outcome unknown
  WAITING: "waiting", // rate limited: will be sent again after a pause
  ACKNOWLEDGED: "acknowledged", // the server stored it (ack or our own event seen)
  FAILED: "failed", // refused; the person can try again or discard it
});

export class GroupSession extends EventTarget {
  constructor({ connection, identity, groupId, name }) {
    super();
    this.conn = connection;
    this.identity = identity;
    this.groupId = groupId;
    this.name = name;

    this.state = SessionState.IDLE;
    this.info = null;
    this.members = new Map(); // key -> member record
    this.events = new Map(); // seq -> event record
    this.maxSeq = 0;
    // Highest seq below which we hold every event since our history began (null until
    // the first event). Resuming asks for events after it, so a hole gets filled.
    this.contiguous = null;
    this.gapRejoinFor = null; // the `contiguous` value a gap rejoin was sent for
    this.countersSeen = new Map(); // key -> Set of counters in verified events
    this.liveAfter = Infinity; // events above the last joined head are live
    this.everJoined = false;

    // Our posts not yet seen as events, by local id.
    this.outbox = new Map();
    this.nextLocalId = 1;
    // Counter -> local id for every counter we signed a post with, so our own event
    // can be matched to its outbox entry whichever arrives first.
    this.localIdByCounter = new Map();

    this.resume = null; // { head, timer } while replayed history is still arriving
    this.joinInFlight = false;
    this.inbox = Promise.resolve();

    this.onAuthenticated = () => this.rejoin();
    this.onPush = (ev) => {
      const frame = ev.detail;
      if (frame.group === this.groupId) {
        this.enqueue(() => this.handlePush(frame));
      }
    };
    this.onDisconnected = (ev) => {
      if (ev.detail.status === "reconnecting" && this.state === SessionState.JOINED) {
        this.setState(SessionState.REJOINING);
      }
    };
    this.conn.addEventListener("authenticated", this.onAuthenticated);
    this.conn.addEventListener("push", this.onPush);
    this.conn.addEventListener("status", this.onDisconnected);
  }

  // ---- joining ----

  /** First join. Resolves when joined; rejects with the RequestError on refusal. */
  async join() {
    this.setState(SessionState.JOINING);
    try {
      await this.sendJoin();
    } catch (err) {
      if (err.code === "not_connected" || err.code === "disconnected") {
        // The connection will come back and rejoin() will try again.
        return;
      }
      this.setState(SessionState.FAILED, err);
      throw err;
    }
  }

  /** After a reconnect: join again and resume from the highest seq seen. */
  rejoin() {
    if (this.state === SessionState.LEFT || this.state === SessionState.FAILED) {
      return;
    }
    if (this.state === SessionState.IDLE || this.joinInFlight) {
      return; // not started yet, or a join is already on its way
    }
    this.setState(this.everJoined ? SessionState.REJOINING : SessionState.JOINING);
    this.sendJoin().catch((err) => {
      if (err.code === "not_connected" || err.code === "disconnected") {
        return; // the next "authenticated" tries again
      }
      if (err.code === "rate_limited" || err.code === "stale" || err.code === "replay") {
        setTimeout(() => this.rejoin(), err.retryAfterMs ?? 2000);
        return;
      }
      this.setState(SessionState.FAILED, err);
    });
  }

  async sendJoin() {
    const after = this.everJoined ? this.resumeAfter() : undefined;
    let joined;
    this.joinInFlight = true;
    try {
      joined = await this.conn.signedRequest(
        "join",
        Kind.JOIN,
        (counter, ts) => joinPayload(this.groupId, this.name, counter, ts),
        { group: this.groupId, after },
      );
    } finally {
      this.joinInFlight = false;
    }
    // Still inside the microtasks that follow the `joined` frame, so this runs before
    // the history events that follow it are handled.
    await this.enqueue(() => this.applyJoined(joined, after !== undefined));
  }

  /** The `after` for a rejoin: everything we hold without a hole. */
  resumeAfter() {
    if (this.contiguous !== null) {
      return this.contiguous;
    }
    // Joined before but no event arrived (dropped during the history): ask for what
    // a first join would have sent.
    return Math.max(0, (Number.isFinite(this.liveAfter) ? this.liveAfter : 0) - HISTORY_ON_JOIN);
  }

  async applyJoined(joined, resumed) {
    if (this.state === SessionState.LEFT) {
      return;
    }
    this.info = joined.group ?? { id: this.groupId, title: this.groupId, kind: "drop_in" };
    const head = Number.isSafeInteger(joined.head) ? joined.head : 0;
    this.liveAfter = head;
    const members = Array.isArray(joined.members) ? joined.members : [];
    const records = await Promise.all(members.map((m) => this.verifyMember(m)));
    this.members = new Map(records.map((r) => [r.key, r]));
    this.everJoined = true;
    this.setState(SessionState.JOINED);
    this.emit("joined", { info: this.info, members: [...this.members.values()], resumed });

    clearTimeout(this.resume?.timer);
    this.resume = {
      head,
      timer: setTimeout(() => this.enqueue(() => this.settleOutbox()), RESUME_SETTLE_TIMEOUT_MS),
    };
    if (this.maxSeq >= head) {
      this.settleOutbox();
    }
  }

  async verifyMember(member) {
    const key = typeof member?.key === "string" ? member.key : "";
    const name = typeof member?.name === "string" ? member.name : "";
    const check = await verifyEnvelope(member?.join, { kind: Kind.JOIN, group: this.groupId, key });
    let verified = check.verified;
    let reason = check.reason;
    if (verified && check.payload.name !== name) {
      verified = false;
      reason = "name_mismatch";
    }
    return {
      key,
      name,
      roles: Array.isArray(member?.roles) ? member.roles.filter((r) => typeof r === "string") : [],
      online: member?.online === true,
      verified,
      reason,
      self: key === this.identity.publicKey,
    };
  }

  // ---- leaving ----

  async leave() {
    const wasJoined = this.state === SessionState.JOINED;
    this.setState(SessionState.LEFT);
    this.dispose();
    if (wasJoined) {
      await this.conn.request("leave", { group: this.groupId }).catch(() => {});
    }
  }

  dispose() {
    clearTimeout(this.resume?.timer);
    for (const entry of this.outbox.values()) {
      clearTimeout(entry.retryTimer);
    }
    this.conn.removeEventListener("authenticated", this.onAuthenticated);
    this.conn.removeEventListener("push", this.onPush);
    this.conn.removeEventListener("status", this.onDisconnected);
  }

  // ---- incoming ----

  enqueue(job) {
    const run = this.inbox.then(job);
    this.inbox = run.catch(() => {});
    return run;
  }

  async handlePush(frame) {
    if (this.state === SessionState.LEFT) {
      return;
    }
    if (frame.type === "presence") {
      const record = await this.verifyMember(frame.member);
      if (record.key) {
        this.members.set(record.key, record);
        this.emit("member", record);
      }
      return;
    }
    if (frame.type === "event") {
      await this.handleEvent(frame);
    }
  }

  async handleEvent(frame) {
    const seq = frame.seq;
    if (!Number.isSafeInteger(seq) || seq < 1 || this.events.has(seq)) {
      return; // a duplicate from an overlapping resume, or nonsense
    }
    const check = await verifyEnvelope(frame.env, { group: this.groupId });
    const env = frame.env ?? {};
    if (check.verified && env.kind === Kind.POST) {
      // The server never accepts a counter twice from one key, so a second event with
      // the same (key, counter) is a copy, whatever its signature says.
      let seen = this.countersSeen.get(env.key);
      if (!seen) {
        seen = new Set();
        this.countersSeen.set(env.key, seen);
      }
      if (seen.has(check.payload.counter)) {
        check.verified = false;
        check.reason = "duplicate";
      } else {
        seen.add(check.payload.counter);
      }
    }
    const record = {
      seq,
      ts: Number.isFinite(frame.ts) ? frame.ts : null,
      kind: typeof env.kind === "string" ? env.kind : "unknown",
      key: typeof env.key === "string" ? env.key : "",
      verified: check.verified,
      reason: check.reason,
      // Only read from when verified is true; kept otherwise so the person can choose
      // to look at it, clearly marked.
      payload: check.payload ?? null,
      rawPayload: typeof env.payload === "string" ? env.payload : "",
      self: env.key === this.identity.publicKey,
      delivery: null,
    };
    this.events.set(seq, record);
    this.maxSeq = Math.max(this.maxSeq, seq);
    const gap = this.trackContiguous(seq);

    let replaces;
    // Our own post, recognised by key and counter. Only a verified envelope counts:
    // anything else cannot be trusted to be ours.
    if (record.self && record.verified && record.kind === Kind.POST) {
      const localId = this.localIdByCounter.get(record.payload.counter);
      const entry = localId !== undefined ? this.outbox.get(localId) : undefined;
      if (entry) {
        clearTimeout(entry.retryTimer);
        this.outbox.delete(localId);
        replaces = localId;
        // An event is stored, whether or not its ack has arrived yet.
        record.delivery = Delivery.ACKNOWLEDGED;
      }
    }
    this.emit("event", { record, live: seq > this.liveAfter, replaces });

    if (this.resume && this.maxSeq >= this.resume.head) {
      this.settleOutbox();
    }
    if (gap) {
      // seq is gap-free per group: a hole means events were missed (PROTOCOL.md §10.2).
      this.rejoin();
    }
  }

  /** Advances `contiguous`; returns true when a hole should be filled by rejoining. */
  trackContiguous(seq) {
    if (this.contiguous === null) {
      this.contiguous = seq - 1; // our history starts here
    }
    while (this.events.has(this.contiguous + 1)) {
      this.contiguous += 1;
    }
    if (this.maxSeq <= this.contiguous) {
      return false;
    }
    if (this.gapRejoinFor === this.contiguous) {
      // Asked once already and the server could not fill it (for example the events
      // are past retention): accept the hole rather than ask forever.
      this.contiguous = this.maxSeq;
      return false;
    }
    if (this.state !== SessionState.JOINED) {
      return false; // a join is under way; its replay may still fill the hole
    }
    this.gapRejoinFor = this.contiguous;
    return true;
  }

  /** Applies the retry rule once replayed history is complete. */
  settleOutbox() {
    if (!this.resume) {
      return;
    }
    clearTimeout(this.resume.timer);
    this.resume = null;
    for (const entry of [...this.outbox.values()]) {
      if (entry.delivery === Delivery.UNCONFIRMED || entry.delivery === Delivery.QUEUED) {
        // Not among the replayed events (those were removed from the outbox as they
        // arrived), so it was not stored: send it again with a new counter.
        this.sendEntry(entry);
      }
    }
  }

  // ---- outgoing ----

  /** Queues a message and sends it when possible. Returns the outbox record. */
  post(body) {
    const entry = {
      localId: this.nextLocalId,
      body,
      counters: [],
      delivery: Delivery.QUEUED,
      seq: null,
      error: null,
      resigns: 0,
      retryTimer: null,
      createdAt: Date.now(),
    };
    this.nextLocalId += 1;
    this.outbox.set(entry.localId, entry);
    this.emit("outbox", entry);
    this.sendEntry(entry);
    return entry;
  }

  /** Sends a failed or waiting post again (the person pressed "Try again"). */
  retry(localId) {
    const entry = this.outbox.get(localId);
    if (entry && entry.delivery === Delivery.FAILED) {
      entry.resigns = 0;
      this.sendEntry(entry);
    }
  }

  /** Forgets a post that failed (the person pressed "Discard"). */
  discard(localId) {
    const entry = this.outbox.get(localId);
    if (entry && entry.delivery === Delivery.FAILED) {
      this.outbox.delete(localId);
      this.emit("outbox", { ...entry, discarded: true });
    }
  }

  async sendEntry(entry) {
    clearTimeout(entry.retryTimer);
    if (this.state !== SessionState.JOINED || this.resume) {
      // settleOutbox() sends it once joined again and the history is complete.
      if (entry.delivery !== Delivery.UNCONFIRMED) {
        this.setDelivery(entry, Delivery.QUEUED);
      }
      return;
    }
    this.setDelivery(entry, Delivery.SENDING);
    let signed = false;
    try {
      const ack = await this.conn.signedRequest(
        "post",
        Kind.POST,
        (counter, ts) => postPayload(this.groupId, entry.body, counter, ts),
        { group: this.groupId },
        (counter) => {
          signed = true;
          entry.counters.push(counter);
          this.localIdByCounter.set(counter, entry.localId);
        },
      );
      if (this.outbox.has(entry.localId)) {
        entry.seq = Number.isSafeInteger(ack.seq) ? ack.seq : null;
        this.setDelivery(entry, Delivery.ACKNOWLEDGED);
      }
      // If our event came first, the entry has left the outbox already and the event
      // record says it is stored.
    } catch (err) {
      if (!this.outbox.has(entry.localId)) {
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
        this.rejoin();
        return;
      case "replay":
      case "stale":
        // Another tab used a higher counter first, or the clock moved: a refused post
        // changed nothing, so sign it again with a new counter and time.
        if (entry.resigns < MAX_RESIGN_ATTEMPTS) {
          entry.resigns += 1;
          this.sendEntry(entry);
          return;
        }
        break;
      case "internal":
        // Nothing happened on the server; try again a little later (PROTOCOL.md §10.7).
        if (entry.resigns < MAX_RESIGN_ATTEMPTS) {
          entry.resigns += 1;
          entry.error = err;
          this.setDelivery(entry, Delivery.WAITING);
          entry.retryTimer = setTimeout(() => this.sendEntry(entry), 1000 * 2 ** entry.resigns);
          return;
        }
        break;
      case "rate_limited": {
        const wait = err.retryAfterMs ?? 2000;
        entry.error = err;
        this.setDelivery(entry, Delivery.WAITING);
        entry.retryTimer = setTimeout(() => this.sendEntry(entry), wait);
        return;
      }
      default:
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
    this.emit("outbox", entry);
  }

  // ---- helpers ----

  /** The member record for a key, if the key has joined. */
  member(key) {
    return this.members.get(key);
  }

  setState(state, error = null) {
    this.state = state;
    this.emit("state", { state, error });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

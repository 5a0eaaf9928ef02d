// One joined group, as this tab sees it: where we stand, the group's state, members,
// the verified logs of every channel we read, and our own posts on their way.
//
// Data flow:
//   join() ─► signed join ─► `joined` (status, state, members, head) ─► history `event`s
//          ─► `records` round trip (every history frame has arrived) ─► settle outbox
//   waiting room ─► facilitator admits ─► `joined` push (no id) + history ─► in the room
//   post() ─► outbox ─► signed post (`to` for a private one) ─► `ack` ─► our own `event`
//   presence / group_update / dismissed ─► standing and state ─► "standing", "group-state"
//   reconnect ─► "authenticated" ─► signed join with after = highest main seq held
//             ─► replayed events ─► settle the outbox (the retry rule below)
//
// Channels: "main" (the conversation), "staff" (facilitators), "pair:<a>:<b>" (a private
// check-in). Each has its own gap-free seq; only main is resumed with `after` — the
// server re-sends the last 100 of the others on every join, and seqs already held are
// skipped.
//
// Every envelope is verified (event-records.js) before anything else sees it. Incoming
// frames are handled one at a time in arrival order (verification is asynchronous),
// so the logs and the outbox never race.
//
// The retry rule (server semantics, "Resume and retries", kept by post-outbox.js): a
// post sent but not acknowledged may or may not be stored. After resuming, look for it
// (same key and counter) among the replayed events; only if it is absent, sign it
// again with a NEW counter and send it again. Private posts follow the same rule:
// their channels are replayed on every join, and the `records` round trip after
// `joined` tells us the replay is complete.
//
// Owns: this group's state. Never touches the DOM; the UI listens to its events:
//   "state"        { state, error? }   joining | joined | rejoining | failed | left | dismissed
//   "joined"       { info, members, resumed }
//   "member"       { record, previous }   a member appeared or changed
//   "event"        { record, live, replaces? }   replaces = outbox id it supersedes
//   "event-changed" { record }          a held event was redacted, or its redaction confirmed
//   "outbox"       outbox record (added or changed; `to` set for a private one)
//   "group-state"  { state, previous }
//   "standing"     { status, inRoom }   our own place in the group changed
//   "dismissed"    { reason, message }  the server took us out (declined, removed, ended)

import { RESUME_SETTLE_TIMEOUT_MS } from "./config.js";
import { EventReader } from "./event-records.js";
import { PostOutbox } from "./post-outbox.js";
import {
  agreePayload,
  channelKey,
  controlPayload,
  flagPayload,
  HISTORY_ON_JOIN,
  joinFrameFields,
  joinPayload,
  Kind,
  MAIN,
  MemberStatus,
  pairChannel,
  pairPeer,
  recordPayload,
  reportPayload,
  stepOutPayload,
  verifyEnvelope,
} from "./protocol.js";
import { isStaffRole, postingBlock } from "./standing.js";

// Delivery states live with the outbox; widgets import them from here.
export { Delivery } from "./post-outbox.js";

export const SessionState = Object.freeze({
  IDLE: "idle",
  JOINING: "joining",
  JOINED: "joined",
  REJOINING: "rejoining",
  FAILED: "failed",
  LEFT: "left",
  DISMISSED: "dismissed",
});

// Refusals that changed nothing and pass by themselves: the hub (or, in a cluster,
// the group's node) could not take the request just now.
const UNAVAILABLE = new Set(["storage_unavailable", "internal", "shutting_down"]);

const isCount = (v) => Number.isSafeInteger(v) && v >= 0;

/** The group state as this client uses it, with safe defaults for missing fields. */
export function readGroupState(state) {
  const s = state && typeof state === "object" ? state : {};
  const agreement = s.agreement && typeof s.agreement === "object" ? s.agreement : {};
  return {
    session: isCount(s.session) ? s.session : 0,
    session_open: s.session_open !== false,
    door_open: s.door_open !== false,
    next_session_ms: isCount(s.next_session_ms) ? s.next_session_ms : null,
    paused: s.paused === true,
    locked: s.locked === true,
    slow_mode_secs: isCount(s.slow_mode_secs) ? s.slow_mode_secs : 0,
    agreement: {
      version: isCount(agreement.version) ? agreement.version : 0,
      text: typeof agreement.text === "string" ? agreement.text : "",
    },
    pinned: Array.isArray(s.pinned) ? s.pinned.filter(isCount) : [],
    lead: typeof s.lead === "string" && s.lead ? s.lead : null,
    co_facilitators: Array.isArray(s.co_facilitators)
      ? s.co_facilitators.filter((k) => typeof k === "string")
      : [],
  };
}

export class GroupSession extends EventTarget {
  constructor({ connection, identity, groupId, name, accessCode = null, seen = null }) {
    super();
    this.conn = connection;
    this.identity = identity;
    this.groupId = groupId;
    this.name = name;
    this.accessCode = accessCode;

    this.state = SessionState.IDLE;
    this.info = null;
    this.groupState = null;
    this.status = null; // our MemberStatus
    this.inRoom = false;
    this.lastInRoom = false; // inRoom as last reported in "standing"
    this.dismissal = null; // { reason, message } once the server took us out
    this.members = new Map(); // key -> member record
    this.logs = new Map(); // channel -> Map(seq -> record)
    this.reader = new EventReader({ groupId, me: identity.publicKey, seen });

    // Main channel bookkeeping.
    this.maxSeq = 0;
    // Highest seq below which we hold every main event since our history began (null
    // until the first event). Resuming asks for events after it, so a hole gets filled.
    this.contiguous = null;
    this.gapRejoinFor = null; // the `contiguous` value a gap rejoin was sent for
    this.liveAfter = Infinity; // events above the last joined head are live
    this.everJoined = false;
    // When slow mode next lets our message through (server time), or null.
    this.slowUntilMs = null;

    // Our posts not yet seen as events.
    this.outbox = new PostOutbox(this);

    this.resume = null; // { timer } while replayed history is still arriving
    // True from sending a join until its history has all arrived: events of the other
    // channels (re-sent on every join) are history then, not news to announce.
    this.replaying = false;
    this.joinInFlight = false;
    this.inbox = Promise.resolve();

    this.onAuthenticated = () => this.rejoin();
    this.onPush = (ev) => {
      const frame = ev.detail;
      // `joined` names its group with a GroupInfo; every other push with the id.
      const group = typeof frame.group === "string" ? frame.group : frame.group?.id;
      if (group === this.groupId) {
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
    if (
      this.state === SessionState.LEFT ||
      this.state === SessionState.FAILED ||
      this.state === SessionState.DISMISSED
    ) {
      return;
    }
    if (this.state === SessionState.IDLE || this.joinInFlight) {
      return; // not started yet, or a join is already on its way
    }
    this.setState(this.everJoined ? SessionState.REJOINING : SessionState.JOINING);
    this.sendJoin().then(
      () => {
        this.unavailableTries = 0;
      },
      (err) => this.onRejoinRefused(err),
    );
  }

  /** A rejoin the server refused: try again when it may pass, else give up. */
  onRejoinRefused(err) {
    if (err.code === "not_connected" || err.code === "disconnected") {
      return; // the next "authenticated" tries again
    }
    if (err.code === "rate_limited" || err.code === "stale" || err.code === "replay") {
      setTimeout(() => this.rejoin(), err.retryAfterMs ?? 2000);
      return;
    }
    if (UNAVAILABLE.has(err.code)) {
      // Nothing changed on the server: in a cluster, the group is moving to another
      // node (its old one failed) and is served again within seconds. Keep trying,
      // a little more slowly each time; the person sees "Reconnecting to the group".
      const tries = this.unavailableTries ?? 0;
      this.unavailableTries = tries + 1;
      setTimeout(() => this.rejoin(), Math.min(30_000, 1000 * 2 ** Math.min(tries, 5)));
      return;
    }
    if (this.everJoined && (err.code === "removed" || err.code === "closed")) {
      // Taken out (or the session ended) while we were away: say so as the server
      // would have in a `dismissed` frame.
      this.enqueue(() =>
        this.applyDismissed({
          reason: err.code === "removed" ? "removed" : "session_ended",
          message: err.frame?.message ?? "",
        }),
      );
      return;
    }
    this.setState(SessionState.FAILED, err);
  }

  async sendJoin() {
    if (this.conn.identity?.publicKey !== this.identity.publicKey) {
      // The connection is logged in under another key (identities.js): joining with
      // it would link the two. Wait for a login with ours.
      throw Object.assign(new Error("another key"), { code: "not_connected" });
    }
    const after = this.everJoined ? this.resumeAfter() : undefined;
    let joined;
    this.joinInFlight = true;
    this.replaying = true;
    try {
      joined = await this.conn.signedRequest(
        "join",
        Kind.JOIN,
        (counter, ts) => joinPayload(this.groupId, this.name, counter, ts),
        joinFrameFields(this.groupId, after, this.accessCode),
      );
    } finally {
      this.joinInFlight = false;
    }
    // Still inside the microtasks that follow the `joined` frame, so this runs before
    // the history events that follow it are handled.
    await this.enqueue(() => this.applyJoined(joined, after !== undefined));
    this.awaitHistory();
  }

  /**
   * The server writes all of a join's history before it reads our next frame, so the
   * answer to a harmless `records` request comes after the last history event. Then
   * the outbox can be settled (the records themselves go to the record book).
   */
  awaitHistory() {
    this.conn
      .request("records")
      .then(() =>
        this.enqueue(() => {
          this.replaying = false;
          this.settleOutbox();
        }),
      )
      .catch(() => {
        // Disconnected: the next join settles it, or the timer does.
      });
  }

  /** The `after` for a rejoin: everything we hold without a hole. */
  resumeAfter() {
    if (this.contiguous !== null) {
      return this.contiguous;
    }
    // Joined before but no event arrived (dropped during the history, or still
    // waiting): ask for what a first join would have sent.
    return Math.max(0, (Number.isFinite(this.liveAfter) ? this.liveAfter : 0) - HISTORY_ON_JOIN);
  }

  async applyJoined(joined, resumed) {
    if (this.state === SessionState.LEFT || this.state === SessionState.DISMISSED) {
      return;
    }
    this.info = joined.group ?? { id: this.groupId, title: this.groupId, kind: "drop_in" };
    const head = Number.isSafeInteger(joined.head) ? joined.head : 0;
    this.liveAfter = head;
    const members = Array.isArray(joined.members) ? joined.members : [];
    const records = await Promise.all(members.map((m) => this.verifyMember(m)));
    for (const record of records) {
      const previous = this.members.get(record.key);
      record.seenInRoom = record.status === MemberStatus.ADMITTED || previous?.seenInRoom === true;
    }
    this.members = new Map(records.map((r) => [r.key, r]));
    this.everJoined = true;
    this.setGroupState(joined.state);
    const status = typeof joined.status === "string" ? joined.status : MemberStatus.WAITING;
    const staff = this.isStaff();
    if (status === MemberStatus.ADMITTED || staff) {
      this.inRoom = true;
    } else if (status === MemberStatus.WAITING) {
      this.inRoom = false;
    }
    // needs_agreement keeps what we knew: people already in the room stay in it.
    this.setStanding(status);
    this.setState(SessionState.JOINED);
    this.emit("joined", { info: this.info, members: [...this.members.values()], resumed });

    clearTimeout(this.resume?.timer);
    this.resume = {
      timer: setTimeout(
        () =>
          this.enqueue(() => {
            this.replaying = false;
            this.settleOutbox();
          }),
        RESUME_SETTLE_TIMEOUT_MS,
      ),
    };
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
      status: typeof member?.status === "string" ? member.status : MemberStatus.ADMITTED,
      facilitator: member?.facilitator === true,
      mutedUntilMs: isCount(member?.muted_until_ms) ? member.muted_until_ms : null,
      away: member?.away === true,
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
    this.outbox.stopTimers();
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
    if (this.state === SessionState.LEFT || this.state === SessionState.DISMISSED) {
      return;
    }
    switch (frame.type) {
      case "presence":
        await this.applyPresence(frame.member);
        break;
      case "event":
        await this.handleEvent(frame);
        break;
      case "group_update":
        this.setGroupState(frame.state);
        break;
      case "dismissed":
        this.applyDismissed(frame);
        break;
      case "joined":
        // Admitted from the waiting room (or brought in by agreeing): the main history
        // follows, as after our own join. Nothing of ours can be among it (we could
        // not post there while waiting), so the outbox is settled at once.
        await this.applyJoined(frame, false);
        this.settleOutbox();
        break;
      default:
        break;
    }
  }

  async applyPresence(member) {
    const record = await this.verifyMember(member);
    if (!record.key) {
      return;
    }
    const previous = this.members.get(record.key);
    // Whether we have seen them in the room: after an agreement change people in the
    // room show as needs_agreement too, like someone still in the waiting room.
    record.seenInRoom = record.status === MemberStatus.ADMITTED || previous?.seenInRoom === true;
    this.members.set(record.key, record);
    this.emit("member", { record, previous });
    if (record.self) {
      if (record.status === MemberStatus.ADMITTED) {
        this.inRoom = true;
      }
      this.setStanding(record.status);
    }
  }

  applyDismissed(frame) {
    this.dismissal = {
      reason: typeof frame.reason === "string" ? frame.reason : "",
      message: typeof frame.message === "string" ? frame.message : "",
    };
    this.inRoom = false;
    clearTimeout(this.resume?.timer);
    this.resume = null;
    this.outbox.failAll({ code: frame.reason === "session_ended" ? "closed" : "removed" });
    this.setState(SessionState.DISMISSED);
    this.emit("dismissed", this.dismissal);
  }

  /** The log of one channel (created empty on first use). */
  log(channel) {
    let log = this.logs.get(channel);
    if (!log) {
      log = new Map();
      this.logs.set(channel, log);
    }
    return log;
  }

  async handleEvent(frame) {
    const seq = frame.seq;
    const channel = channelKey(frame.channel);
    if (!Number.isSafeInteger(seq) || seq < 1 || channel === null) {
      return; // nonsense
    }
    const log = this.log(channel);
    const held = log.get(seq);
    if (held) {
      // The same seq again: a redaction re-sent, or a duplicate from an overlapping
      // resume (ignored).
      if (frame.redacted && !held.redaction) {
        await this.applyResentRedaction(held, frame);
      }
      return;
    }
    const record = await this.reader.read(frame, channel);
    log.set(seq, record);
    let gap = false;
    if (channel === MAIN) {
      if (!this.inRoom) {
        // Only people in the room receive the conversation.
        this.inRoom = true;
        this.setStanding(this.status);
      }
      this.maxSeq = Math.max(this.maxSeq, seq);
      gap = this.trackContiguous(seq);
    }

    // Our own post, recognised by key and counter. Only a verified envelope counts:
    // anything else cannot be trusted to be ours.
    const replaces =
      record.self && record.verified && record.kind === Kind.POST ? this.outbox.claim(record) : undefined;
    if (record.redaction) {
      this.confirmRedaction(record);
      if (!this.canModerate()) {
        this.hideRedacted(record);
      }
    }
    const live = channel === MAIN ? seq > this.liveAfter : !this.replaying;
    this.emit("event", { record, live, replaces });

    if (channel === MAIN && record.verified && record.kind === Kind.CONTROL) {
      this.onControlEvent(record);
    }
    if (gap) {
      // seq is gap-free per channel: a hole means events were missed (PROTOCOL.md §10.2).
      this.rejoin();
    }
  }

  /** A verified control in the conversation: apply what it means for held events. */
  onControlEvent(control) {
    const action = control.payload.action;
    if (action.do !== "redact") {
      return;
    }
    const target = this.log(MAIN).get(action.seq);
    if (!target) {
      return;
    }
    // Only a facilitator, or the message's own writer withdrawing it, may redact it
    // (PROTOCOL.md §8.6): the hub refuses anyone else, and so does this page.
    const allowed = this.isFacilitator(control.key) || (target.key && target.key === control.key);
    if (!target.redaction && allowed) {
      // The facilitator's own signed request, seen before (or instead of) the hub's
      // re-sent event: it is enough to hide the text.
      target.redaction = { by: control.key, reason: action.reason, controlSeq: control.seq, confirmed: true };
      if (!this.canModerate()) {
        this.hideRedacted(target);
      }
      this.emit("event-changed", { record: target });
    } else if (target.redaction && !target.redaction.confirmed && this.confirmRedaction(target)) {
      this.emit("event-changed", { record: target });
    }
  }

  async applyResentRedaction(held, frame) {
    if (frame.env) {
      // A facilitator's copy: the same envelope, now marked. Check it is the same.
      const again = await this.reader.read(frame, held.channel, { repeat: true });
      held.redaction = again.redaction;
      if (!again.verified || again.rawPayload !== held.rawPayload) {
        held.verified = false;
        held.reason = again.verified ? "changed" : again.reason;
      }
    } else {
      const again = await this.reader.read(frame, held.channel, { repeat: true });
      held.redaction = again.redaction;
      this.hideRedacted(held);
    }
    this.confirmRedaction(held);
    this.emit("event-changed", { record: held });
  }

  /** Drops a removed message's text from a participant's copy. */
  hideRedacted(record) {
    record.hiddenText = true;
    record.payload = null;
    record.rawPayload = "";
  }

  /**
   * Marks a redaction confirmed when the facilitator's signed `redact` control for it
   * is in the conversation, signed by the key the hub names, with the same reason.
   */
  confirmRedaction(record) {
    const r = record.redaction;
    if (!r || r.confirmed) {
      return Boolean(r?.confirmed);
    }
    const control = this.log(MAIN).get(r.controlSeq);
    const action = control?.verified && control.kind === Kind.CONTROL ? control.payload.action : null;
    if (action?.do === "redact" && action.seq === record.seq && action.reason === r.reason && control.key === r.by) {
      r.confirmed = true;
    }
    return r.confirmed;
  }

  /** Advances `contiguous`; returns true when a hole should be filled by rejoining. */
  trackContiguous(seq) {
    const log = this.log(MAIN);
    if (this.contiguous === null) {
      this.contiguous = seq - 1; // our history starts here
    }
    while (log.has(this.contiguous + 1)) {
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
    this.outbox.settle();
  }

  // ---- standing and group state ----

  setGroupState(raw) {
    const previous = this.groupState;
    const state = readGroupState(raw);
    this.groupState = state;
    if (previous && state.agreement.version > previous.agreement.version && this.status !== null) {
      // A new agreement: everyone is asked again (the presence that says so follows).
      this.setStanding(MemberStatus.NEEDS_AGREEMENT);
    }
    if (previous?.slow_mode_secs > 0 && state.slow_mode_secs === 0) {
      // Slow mode is off: what was waiting for it can go now.
      this.slowUntilMs = null;
      this.outbox.sendWaiting("slow_mode");
    }
    this.emit("group-state", { state, previous });
  }

  setStanding(status) {
    const changed = status !== this.status || this.lastInRoom !== this.inRoom;
    this.status = status;
    this.lastInRoom = this.inRoom;
    if (changed) {
      this.emit("standing", { status, inRoom: this.inRoom });
    }
  }

  /** Our own member record, once known. */
  me() {
    return this.members.get(this.identity.publicKey) ?? null;
  }

  /**
   * Staff are always in the room (facilitator, supervisor, admin, co-facilitator) —
   * as the hub counts our roles in this group (PROTOCOL.md §13, "Staff model"): a
   * facilitator of another group, or a supervisor no escalation brought here, is not.
   */
  isStaff() {
    return this.conn.roles.includes("admin") || isStaffRole(this.me()?.roles ?? []) || this.canModerate();
  }

  /** Whether we have facilitator powers in this group (a grant for it, or co-facilitator). */
  canModerate() {
    const me = this.identity.publicKey;
    return (
      this.me()?.facilitator === true ||
      (this.groupState?.co_facilitators ?? []).includes(me)
    );
  }

  /** Whether a key has facilitator powers here, as far as we can tell. */
  isFacilitator(key) {
    return (
      this.members.get(key)?.facilitator === true ||
      (this.groupState?.co_facilitators ?? []).includes(key) ||
      this.groupState?.lead === key
    );
  }

  /** Why a main-channel post can't be sent now (see standing.js), or null. */
  postingBlock() {
    return postingBlock({
      status: this.status,
      inRoom: this.inRoom,
      dismissed: this.dismissal !== null,
      state: this.groupState,
      me: this.me(),
      facilitator: this.canModerate(),
      now: this.conn.clock.now(),
      slowUntilMs: this.slowUntilMs,
    });
  }

  /** The key of the lead facilitator, if there is one and it is not us. */
  lead() {
    const lead = this.groupState?.lead ?? null;
    return lead && lead !== this.identity.publicKey ? lead : null;
  }

  /** Every private channel we hold events of, with the other key. */
  privateChannels() {
    const me = this.identity.publicKey;
    return [...this.logs.keys()]
      .map((channel) => ({ channel, peer: pairPeer(channel, me) }))
      .filter((c) => c.peer !== null);
  }

  /** The private channel between us and `peer`. */
  privateChannelWith(peer) {
    return pairChannel(this.identity.publicKey, peer);
  }

  /**
   * The verified control that set the agreement in force, if it is in the
   * conversation we hold (version 1 comes with the group and is not signed to us).
   */
  agreementControl() {
    const text = this.groupState?.agreement.text;
    let found = null;
    for (const record of this.log(MAIN).values()) {
      if (
        record.verified &&
        record.kind === Kind.CONTROL &&
        record.payload.action.do === "set_agreement" &&
        record.payload.action.text === text
      ) {
        found = record;
      }
    }
    return found;
  }

  // ---- outgoing: posts (post-outbox.js keeps them until stored) ----

  /**
   * Queues a message and sends it when possible. `to`: a private message to that key
   * (a check-in with a facilitator). Returns the outbox record.
   */
  post(body, { to = null } = {}) {
    return this.outbox.add(body, to, to ? this.privateChannelWith(to) : MAIN);
  }

  /** Sends a failed post again (the person pressed "Try again"). */
  retry(localId) {
    this.outbox.retry(localId);
  }

  /** Forgets a post that failed (the person pressed "Discard"). */
  discard(localId) {
    this.outbox.discard(localId);
  }

  /** Whether a post may go out now (else it waits for the rejoin's replay). */
  canSendPosts() {
    return this.state === SessionState.JOINED && !this.resume;
  }

  /** The outbox's hook: a post was stored. */
  onPostStored(entry) {
    if (!entry.to && this.groupState?.slow_mode_secs > 0) {
      this.slowUntilMs = this.conn.clock.now() + this.groupState.slow_mode_secs * 1000;
      this.emit("standing", { status: this.status, inRoom: this.inRoom });
    }
  }

  /** The outbox's hook: a post was refused for a reason about our standing. */
  onPostRefused(entry, err) {
    if (err.code === "slow_mode") {
      this.slowUntilMs = this.conn.clock.now() + (err.retryAfterMs ?? 0);
      this.emit("standing", { status: this.status, inRoom: this.inRoom });
    } else if (err.code === "agreement_required") {
      // The agreement changed before we heard: ask now.
      this.setStanding(MemberStatus.NEEDS_AGREEMENT);
    } else if (err.code === "not_joined") {
      this.rejoin();
    }
  }

  // ---- outgoing: other signed requests ----
  //
  // Each resolves with the server's reply (ack, ok or records) or rejects with the
  // RequestError; what changes arrives as pushes (presence, group_update, events).

  signed(type, kind, makePayload) {
    if (this.state === SessionState.DISMISSED) {
      return Promise.reject(Object.assign(new Error("not in group"), { code: "not_in_group" }));
    }
    return this.conn.signedRequest(type, kind, makePayload, { group: this.groupId });
  }

  /** Accepts the agreement in force. */
  agree() {
    const version = this.groupState?.agreement.version ?? 0;
    return this.signed("agree", Kind.AGREE, (counter, ts) => agreePayload(this.groupId, version, counter, ts));
  }

  /** A facilitator control (protocol.js `Control`). */
  control(action) {
    return this.signed("control", Kind.CONTROL, (counter, ts) => controlPayload(this.groupId, action, counter, ts));
  }

  /** Reports a message of the conversation to the facilitators. */
  report(seq, reason) {
    return this.signed("report", Kind.REPORT, (counter, ts) => reportPayload(this.groupId, seq, reason, counter, ts));
  }

  /** Steps out quietly (away = true) or comes back. */
  stepOut(away) {
    return this.signed("step_out", Kind.STEP_OUT, (counter, ts) => stepOutPayload(this.groupId, away, counter, ts));
  }

  /** Opens a record ({ about?, text }) or adds words to one ({ replyTo, text }). */
  writeRecord(fields) {
    return this.signed("record", Kind.RECORD, (counter, ts) => recordPayload(this.groupId, fields, counter, ts));
  }

  /**
   * Raises a distress flag (protocol.js `flagPayload` fields: about, seq?, severity,
   * consent, reason?, withholdNotice?, note?). Resolves with the `flagged` answer.
   * This is the help path: it goes even after the server took us out of the group
   * (removed people can still ask for help there), and nothing here holds it back.
   */
  flag(fields) {
    return this.conn.signedRequest(
      "flag",
      Kind.FLAG,
      (counter, ts) => flagPayload(this.groupId, fields, counter, ts),
      { group: this.groupId },
    );
  }

  // ---- helpers ----

  /** The member record for a key, if the key has joined and we may see it. */
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

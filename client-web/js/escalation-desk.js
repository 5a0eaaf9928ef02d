// The supervisor's desk: every escalation this key may act on, verified, and the
// on-call rota.
//
// Data flow:
//   `escalation` push (raised, merged, routed, acknowledged, note, handover, resolved;
//     every unresolved one after login) ─► read + verify every envelope ─► "change"
//   login as supervisor / admin ─► `escalations` (the queue now: drops what was
//     resolved while we were away) and `rota` ─► "change", "rota"
//   act(id, action) ─► signed `escalation` ─► ok (the new view arrives as a push)
//   setRota(entries) ─► signed `set_rota` ─► ok ─► `rota` again
//
// Verification (strict, as everywhere in this client; see protocol.js):
//   - each flag: kind `flag`, the escalation's group, `about` = the escalation's person;
//   - each context message: kind and channel rules of the group's main conversation,
//     the escalation's group;
//   - each step with an actor: signed by that actor — `raised` / `merged` a flag of
//     this escalation's group and person, the others an `escalation` command naming
//     this escalation and the action the step says. Routing steps are the hub's
//     (unsigned) and are shown as such.
//
// Owns: the escalations in memory (never stored on the device) and the rota as last
// read. Knows nothing of the page.

import { channelProblem } from "./event-records.js";
import {
  EscalationStatus,
  escalationActPayload,
  Kind,
  MAIN,
  rotaPayload,
  SEVERITIES,
  severityRank,
  verifyEnvelope,
} from "./protocol.js";
import { isStaffRole } from "./standing.js";

const isCount = (v) => Number.isSafeInteger(v) && v >= 0;
const isKey = (v) => typeof v === "string" && v !== "";
const STATUSES = Object.values(EscalationStatus);

// The escalation action each signed step must carry.
const STEP_ACTIONS = { acknowledged: "ack", note: "note", handover: "handover", resolved: "resolve" };

/** An EscalationView with the shapes this client relies on, or null. */
export function readView(v) {
  if (
    !v ||
    typeof v !== "object" ||
    !isCount(v.id) ||
    typeof v.group !== "string" ||
    !isKey(v.about) ||
    !SEVERITIES.includes(v.severity) ||
    !STATUSES.includes(v.status) ||
    !isCount(v.level) ||
    !isCount(v.created_ms)
  ) {
    return null;
  }
  const keys = (list) => (Array.isArray(list) ? list.filter(isKey) : []);
  return {
    id: v.id,
    group: v.group,
    about: v.about,
    severity: v.severity,
    status: v.status,
    level: v.level,
    waitingFor: keys(v.waiting_for),
    deadlineMs: isCount(v.deadline_ms) ? v.deadline_ms : null,
    createdMs: v.created_ms,
    handler: isKey(v.handler) ? v.handler : null,
    flags: Array.isArray(v.flags) ? v.flags : [],
    context: Array.isArray(v.context) ? v.context.filter((c) => c && isCount(c.seq)) : [],
    steps: Array.isArray(v.steps) ? v.steps.filter((s) => s && typeof s.step === "string") : [],
    outcome: typeof v.outcome === "string" ? v.outcome : null,
  };
}

/** Most serious first, then the longest waiting (as the hub orders its queue). */
export function byRisk(a, b) {
  return severityRank(b.severity) - severityRank(a.severity) || a.createdMs - b.createdMs || a.id - b.id;
}

/** The rota entries of `key` covering `now`: { levels, untilMs } or null. */
export function onCallNow(rota, key, now) {
  const mine = (rota ?? []).filter((e) => e.supervisor === key && e.start_ms <= now && now < e.end_ms);
  if (mine.length === 0) {
    return null;
  }
  return {
    levels: [...new Set(mine.map((e) => e.level))].sort(),
    untilMs: Math.max(...mine.map((e) => e.end_ms)),
  };
}

/** Rota entries from a `rota` frame, cleaned. */
export function readRota(entries) {
  if (!Array.isArray(entries)) {
    return [];
  }
  return entries
    .filter((e) => e && isKey(e.supervisor) && isCount(e.start_ms) && isCount(e.end_ms) && (e.level === 1 || e.level === 2))
    .map((e) => ({ supervisor: e.supervisor, start_ms: e.start_ms, end_ms: e.end_ms, level: e.level }));
}

// Verified envelopes, by their exact contents: a view is pushed again at every step
// and its flags and context are the same each time. Bounded.
const MAX_CACHED = 4000;
const verified = new Map();

function verifyOnce(env, expect) {
  if (!env || typeof env !== "object") {
    return Promise.resolve({ verified: false, reason: "malformed" });
  }
  const id = JSON.stringify([env.kind, env.key, env.payload, env.sig, expect.kind ?? "", expect.group ?? "", expect.key ?? ""]);
  let check = verified.get(id);
  if (!check) {
    check = verifyEnvelope(env, expect);
    if (verified.size >= MAX_CACHED) {
      verified.delete(verified.keys().next().value);
    }
    verified.set(id, check);
  }
  // Copies, so a caller marking one "unverified" for its context changes no other.
  return check.then((c) => ({ ...c }));
}

async function checkFlag(view, env) {
  const check = await verifyOnce(env, { kind: Kind.FLAG, group: view.group });
  if (check.verified && check.payload.about !== view.about) {
    return { ...check, verified: false, reason: "wrong_subject" };
  }
  return check;
}

async function checkContext(view, event) {
  const check = await verifyOnce(event.env, { group: view.group });
  if (check.verified) {
    const problem = channelProblem(MAIN, event.env.kind, check.payload, event.env.key);
    if (problem) {
      return { ...check, verified: false, reason: problem };
    }
  }
  return check;
}

async function checkStep(view, step) {
  const actor = isKey(step.actor) ? step.actor : null;
  if (!actor) {
    return { hub: true, verified: false, reason: "hub" };
  }
  if (step.step === "raised" || step.step === "merged") {
    const check = await verifyOnce(step.env, { kind: Kind.FLAG, group: view.group, key: actor });
    if (check.verified && check.payload.about !== view.about) {
      return { ...check, verified: false, reason: "wrong_subject" };
    }
    return check;
  }
  const check = await verifyOnce(step.env, { kind: Kind.ESCALATION, key: actor });
  if (check.verified) {
    const action = check.payload.action;
    const fits =
      check.payload.escalation === view.id &&
      STEP_ACTIONS[step.step] === action.do &&
      (action.do !== "handover" || !Array.isArray(step.to) || step.to.length === 0 || step.to[0] === action.to);
    if (!fits) {
      return { ...check, verified: false, reason: "wrong_escalation" };
    }
  }
  return check;
}

/** Verifies every envelope of a view: { flags, context, steps } in the view's order. */
export async function verifyView(view) {
  const [flags, context, steps] = await Promise.all([
    Promise.all(view.flags.map((env) => checkFlag(view, env))),
    Promise.all(view.context.map((event) => checkContext(view, event))),
    Promise.all(view.steps.map((step) => checkStep(view, step))),
  ]);
  return { flags, context, steps };
}

export class EscalationDesk extends EventTarget {
  constructor({ connection, identity }) {
    super();
    this.conn = connection;
    this.me = identity.publicKey;
    this.open = new Map(); // id -> entry { view, checks, seenAt }
    this.resolved = new Map(); // id -> entry, resolved while this page was open
    this.rota = null; // entries as last read, or null before
    this.inbox = Promise.resolve();

    connection.addEventListener("escalation", (ev) => {
      this.enqueue(() => this.apply(ev.detail.escalation));
    });
    connection.addEventListener("authenticated", (ev) => {
      if (isStaffRole(ev.detail.roles)) {
        this.refresh();
      }
    });
    // Coverage changes when the rota is saved or a window starts or ends.
    connection.addEventListener("coverage", () => {
      if (this.isStaff()) {
        this.loadRota();
      }
    });
  }

  /** Whether this key receives escalations (supervisors and admins). */
  isStaff() {
    return this.conn.roles.includes("supervisor") || this.conn.roles.includes("admin");
  }

  enqueue(job) {
    const run = this.inbox.then(job);
    this.inbox = run.catch(() => {});
    return run;
  }

  async apply(raw) {
    const view = readView(raw);
    if (!view) {
      return;
    }
    const checks = await verifyView(view);
    const entry = { view, checks };
    const previous = this.open.get(view.id) ?? null;
    if (view.status === EscalationStatus.RESOLVED) {
      this.open.delete(view.id);
      this.resolved.set(view.id, entry);
      this.emit("change", { id: view.id, entry, previous: previous?.view ?? null, isNew: false });
      return;
    }
    if (this.resolved.has(view.id)) {
      return; // an older copy arriving late
    }
    entry.seenAt = previous?.seenAt ?? Date.now();
    this.open.set(view.id, entry);
    this.emit("change", { id: view.id, entry, previous: previous?.view ?? null, isNew: !previous });
  }

  /** Reads the queue again (after login): what is gone was resolved while away. */
  async refresh() {
    this.loadRota();
    let reply;
    try {
      reply = await this.conn.request("escalations");
    } catch {
      return; // offline: the next login asks again
    }
    const list = Array.isArray(reply.escalations) ? reply.escalations : [];
    await this.enqueue(async () => {
      const ids = new Set(list.map((v) => v?.id));
      for (const id of [...this.open.keys()]) {
        if (!ids.has(id)) {
          this.open.delete(id);
          this.emit("change", { id, entry: null, previous: null, isNew: false, gone: true });
        }
      }
    });
    for (const view of list) {
      this.enqueue(() => this.apply(view));
    }
  }

  async loadRota() {
    try {
      const reply = await this.conn.request("rota");
      this.rota = readRota(reply.entries);
      this.emit("rota", { rota: this.rota });
    } catch {
      // Not allowed (not staff) or offline: keep what we had.
    }
  }

  /** The open escalations, most serious and longest waiting first. */
  queue() {
    return [...this.open.values()].sort((a, b) => byRisk(a.view, b.view));
  }

  /** Whether this key is on call now: { levels, untilMs } or null. */
  onCall(now = this.conn.clock.now()) {
    return onCallNow(this.rota, this.me, now);
  }

  /** A supervisor's step (protocol.js `EscalationAct`). Resolves with `ok`. */
  act(id, action) {
    return this.conn.signedRequest("escalation", Kind.ESCALATION, (counter, ts) =>
      escalationActPayload(id, action, counter, ts),
    );
  }

  /** Replaces the rota (admins). Resolves with `ok`, then reads it back. */
  async setRota(entries) {
    const reply = await this.conn.signedRequest("set_rota", Kind.ROTA, (counter, ts) => rotaPayload(entries, counter, ts));
    await this.loadRota();
    return reply;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

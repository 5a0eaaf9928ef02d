// The supervisor's desk: every escalation this key may act on, verified, and the
// on-call rota.
//
// Data flow (the hub sends bounded summaries; the words come on demand):
//   `escalation` push (a summary: raised, routed, acknowledged, note, handover,
//     resolved) ─► "change"
//   login as supervisor / admin ─► `escalations` pushed (the queue's first page) ─►
//     the other pages by `after` ─► "change" (drops what was resolved while away);
//     `rota` ─► "rota"
//   loadDetail(id) (a card opened) ─► `escalation_detail` pages of its flags, steps
//     and context, one request at a time ─► verify every envelope ─► "change";
//     read again when a later summary says the escalation changed
//   act(id, action) ─► signed `escalation` ─► ok (the new summary arrives as a push)
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
  postPayload,
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

/** An EscalationSummary (or a view) with the shapes this client relies on, or null. */
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
    // The person's name in the group, for staff (the hub's, at the time it was raised).
    name: typeof v.name === "string" && v.name.trim() !== "" ? v.name.slice(0, 200) : null,
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
    counts: readCounts(v.counts, v),
  };
}

/** What a summary says the escalation holds (or, for a full view, its lengths). */
function readCounts(c, v) {
  const n = (x, fallback) => (isCount(x) ? x : fallback);
  const len = (list) => (Array.isArray(list) ? list.length : 0);
  return {
    flags: n(c?.flags, len(v.flags)),
    merged: n(c?.merged, Math.max(0, len(v.flags) - 1)),
    counted: n(c?.counted, 0),
    context: n(c?.context, len(v.context)),
    steps: n(c?.steps, len(v.steps)),
  };
}

const sameCounts = (a, b) => a && b && a.flags === b.flags && a.context === b.context && a.steps === b.steps;

// Pages of the queue read after login at most (a page is 100 summaries).
const MAX_PAGES = 50;

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

    this.details = Promise.resolve(); // one escalation_detail request at a time
    connection.addEventListener("escalation", (ev) => {
      this.enqueue(() => this.apply(ev.detail.escalation));
    });
    // The queue's first page, pushed at login (and when a role is granted).
    connection.addEventListener("escalations", (ev) => {
      this.refresh(ev.detail);
    });
    connection.addEventListener("authenticated", (ev) => {
      if (isStaffRole(ev.detail.roles)) {
        this.loadRota();
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
    const summary = readView(raw);
    if (!summary) {
      return;
    }
    const previous = this.open.get(summary.id) ?? null;
    // A summary carries no words: keep what was read of it, and read it again
    // (if it was read) when the summary says it changed.
    const loaded = previous?.loaded ?? false;
    const view = {
      ...summary,
      flags: previous?.view.flags ?? [],
      context: previous?.view.context ?? [],
      steps: previous?.view.steps ?? [],
    };
    const checks = previous?.checks ?? { flags: [], context: [], steps: [] };
    const entry = { view, checks, loaded };
    if (loaded && !sameCounts(previous.view.counts, summary.counts)) {
      queueMicrotask(() => this.loadDetail(summary.id, { again: true }));
    }
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

  /** The queue after login, from its pushed first page then by `after`: what is
   *  gone was resolved while away. */
  async refresh(first) {
    const list = Array.isArray(first?.escalations) ? [...first.escalations] : [];
    let next = typeof first?.next === "string" ? first.next : null;
    for (let page = 1; next && page < MAX_PAGES; page += 1) {
      let reply;
      try {
        reply = await this.conn.request("escalations", { after: next });
      } catch {
        return; // offline: the next login sends the queue again
      }
      list.push(...(Array.isArray(reply.escalations) ? reply.escalations : []));
      next = typeof reply.next === "string" ? reply.next : null;
    }
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

  /** Every page of one part of escalation `id` (`escalation_detail`). */
  async readPart(id, part) {
    const items = [];
    for (let guard = 0; guard < 200; guard += 1) {
      const reply = await this.conn.request("escalation_detail", { escalation: id, part, offset: items.length });
      const page = Array.isArray(reply[part]) ? reply[part] : [];
      items.push(...page);
      if (page.length === 0 || !isCount(reply.total) || items.length >= reply.total) {
        break;
      }
    }
    return items;
  }

  /** Reads an escalation's flags, steps and context (a card was opened), verifies
   *  them, and keeps them with it. One request at a time. */
  loadDetail(id, { again = false } = {}) {
    const entry = this.open.get(id) ?? this.resolved.get(id);
    if (!entry || (entry.loaded && !again) || entry.loading) {
      return this.details;
    }
    entry.loading = true;
    const run = this.details.then(async () => {
      let parts;
      try {
        const flags = await this.readPart(id, "flags");
        const steps = await this.readPart(id, "steps");
        const context = await this.readPart(id, "context");
        parts = { flags, steps, context: context.filter((c) => c && isCount(c.seq)) };
      } catch {
        return; // offline or refused: opening the card again asks again
      } finally {
        entry.loading = false;
      }
      await this.enqueue(async () => {
        const current = this.open.get(id) ?? this.resolved.get(id);
        if (!current) {
          return;
        }
        const view = { ...current.view, ...parts, steps: parts.steps.filter((s) => s && typeof s.step === "string") };
        const checks = await verifyView(view);
        const next = { ...current, view, checks, loaded: true };
        (this.open.has(id) ? this.open : this.resolved).set(id, next);
        this.emit("change", { id, entry: next, previous: current.view, isNew: false });
      });
    });
    this.details = run.catch(() => {});
    return run;
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

  /**
   * Opens escalation `id`'s private line on this connection without joining its
   * group (§8.5): the history arrives as `event` pushes, then the `line` reply —
   * resolves with it ({ group, to: keys we may write to }).
   */
  openLine(id) {
    return this.conn.request("line", { escalation: id });
  }

  /** Writes privately on escalation `id`'s line to `to` (the person or the lead). */
  linePost(id, group, to, body) {
    return this.conn.signedRequest("line_post", Kind.POST, (counter, ts) => postPayload(group, body, to, counter, ts), {
      group,
      escalation: id,
    });
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

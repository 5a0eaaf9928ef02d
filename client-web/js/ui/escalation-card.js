// One escalation in the supervisor console: how serious, who it is about, where it
// stands and who it waits for, the deadline counting down, and what a supervisor can
// do — acknowledge, join the group, write privately to the person or the facilitator,
// add a note, hand over, resolve with an outcome. Its flags, the messages before it
// and every step are listed with a verified / unverified mark each.
//
// Owns: one <li>. Form fields and the open state of the lists survive every update
// (a new view of the escalation arrives at each step), so a supervisor's half-typed
// note is never lost. The countdown is redrawn by tick() in visible text only; the
// deadline's time is in the text too, so nothing needs to be announced every second.

import { fingerprint, shortTag } from "../encoding.js";
import { sentenceFor } from "../errors.js";
import {
  channelKey,
  checkText,
  EscalationAct,
  EscalationStatus,
  Kind,
  LEVEL_UNANSWERED,
  pairKeys,
  verifyEnvelope,
} from "../protocol.js";
import { durationWords, formatDateTime, formatTime } from "../time-words.js";
import { h, setFieldError } from "./dom.js";
import { errorSentence, runWithStatus } from "./feedback.js";
import { CONSENT_WORDS, SEVERITY_LABEL, SEVERITY_MEANING, SEVERITY_SYMBOL } from "./support-words.js";
import { unverifiedMark, unverifiedReason, verifiedMark } from "./verification.js";

let cardCount = 0;

const STEP_WORDS = {
  raised: "raised the flag",
  merged: "added a flag to it",
  routed: "routed it",
  unanswered: "told the people concerned that nobody had answered yet",
  acknowledged: "acknowledged it",
  note: "added a note",
  handover: "handed it over",
  resolved: "resolved it",
  paged: "sent the pager notice",
  page_failed: "could not reach the pager yet",
};

/** "2:41" for a countdown. */
function clock(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const minutes = Math.floor(total / 60);
  const seconds = String(total % 60).padStart(2, "0");
  return `${minutes}:${seconds}`;
}

/**
 * `desk`: the EscalationDesk; `me`: our key; `isAdmin()`; `nameFor(group, key)`: a
 * verified pseudonym if we know one, else null; `supervisors()`: keys to hand over
 * to; `onJoin(group)`: a promise (the app joins the group). Writing privately goes on
 * the escalation's line, from the card itself.
 */
export function createEscalationCard({ desk, me, isAdmin, nameFor, supervisors, onJoin }) {
  cardCount += 1;
  const id = `esc-${cardCount}`;
  let entry = null;
  let view = null;

  // Names, not keys (issue 15): the hub's name for the person (`view.name`), a
  // verified pseudonym when we know one; a key only when asked ("Show key").
  const who = (key, { capital = false } = {}) => {
    if (key === me) {
      return capital ? "You" : "you";
    }
    const name = view ? (key === view.about && view.name) || nameFor(view.group, key) : null;
    if (name) {
      return name;
    }
    if (view && key === view.about) {
      return capital ? "The person" : "the person";
    }
    return capital ? "Someone" : "someone";
  };
  const keyTitle = (key) => `Key ${fingerprint(key)}`;

  // ---- the parts redrawn on every update ----
  const heading = h("h3", { className: "esc-heading", id: `${id}-title` });
  const about = h("p", { className: "esc-about" });
  const state = h("p", { className: "esc-state" });
  const deadline = h("p", { className: "esc-deadline" });
  const status = h("p", { className: "hint esc-status", attrs: { role: "status" } });

  // ---- actions ----
  const ack = h("button", { type: "button", text: "Acknowledge: I'll take it" });
  ack.addEventListener("click", async () => {
    const ok = await runWithStatus(ack, status, () => desk.act(view.id, EscalationAct.ack()), "You have it. The person and the facilitators have been told a supervisor is on it.");
    if (!ok && status.textContent === sentenceFor("taken")) {
      status.textContent = `${sentenceFor("taken")} The queue shows who.`;
    }
  });
  const join = h("button", { type: "button", className: "secondary", text: "Join the group" });
  join.addEventListener("click", () => runAction(join, () => onJoin(view.group)));
  // Writing privately goes on the escalation's line: the supervisor never joins the
  // group, so nobody there learns that a supervisor came, or for whom.
  const toPerson = h("button", { type: "button", className: "secondary", text: "Write privately to the person" });
  toPerson.addEventListener("click", () => runAction(toPerson, () => openLine("person")));
  const toLead = h("button", { type: "button", className: "secondary", text: "Write privately to the facilitator" });
  toLead.addEventListener("click", () => runAction(toLead, () => openLine("lead")));

  async function runAction(button, fn) {
    button.disabled = true;
    status.textContent = "";
    try {
      await fn();
    } catch (err) {
      status.textContent = errorSentence(err);
      status.dataset.tone = "error";
    } finally {
      button.disabled = false;
    }
  }

  // ---- lists, inside <details> that keep their open state ----
  const flagsSummary = h("summary");
  const flagsList = h("ol", { className: "esc-list" });
  const contextSummary = h("summary");
  const contextList = h("ol", { className: "esc-list" });
  const contextEmpty = h("p", { className: "hint", text: "The group had no messages when it was raised." });
  const stepsSummary = h("summary");
  const stepsList = h("ol", { className: "esc-list esc-steps" });

  // ---- forms ----
  function textForm({ label, hint, button, required, emptyCode, send, done }) {
    const field = h("textarea", { id: `${id}-${button.replace(/\W/g, "")}`, rows: 2 });
    const error = h("p", { className: "field-error", id: `${field.id}-error`, hidden: true, attrs: { role: "alert" } });
    const hintEl = hint ? h("p", { className: "hint", id: `${field.id}-hint`, text: hint }) : null;
    field.setAttribute("aria-describedby", `${hintEl ? `${field.id}-hint ` : ""}${field.id}-error`);
    const submit = h("button", { type: "submit", className: "secondary", text: button });
    const form = h("form", { className: "esc-form", attrs: { novalidate: true } }, h("label", { attrs: { for: field.id }, text: label }), hintEl, field, error, submit);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const text = field.value.trim();
      const problem = checkText(text, { required, limits: desk.conn.limits });
      if (problem) {
        setFieldError(field, error, sentenceFor(problem === "empty_text" ? emptyCode : problem));
        field.focus();
        return;
      }
      setFieldError(field, error, "");
      if (await runWithStatus(submit, status, () => send(text), done)) {
        field.value = "";
      }
    });
    return form;
  }

  const noteForm = textForm({
    label: "Add a note",
    hint: "Kept in the escalation's log, signed by you. Other supervisors read it.",
    button: "Add the note",
    required: true,
    emptyCode: "empty_note",
    send: (text) => desk.act(view.id, EscalationAct.note(text)),
    done: "Your note is in the log.",
  });
  const resolveForm = textForm({
    label: "Resolve: what was the outcome?",
    hint: "This closes the escalation. The person (unless they were not to be told) and the facilitators hear that it is closed.",
    button: "Resolve",
    required: true,
    emptyCode: "empty_outcome",
    send: (text) => desk.act(view.id, EscalationAct.resolve(text)),
    done: "Resolved.",
  });

  const handoverSelect = h("select", { id: `${id}-handover` });
  const handoverButton = h("button", { type: "submit", className: "secondary", text: "Hand over" });
  const handoverForm = h(
    "form",
    { className: "esc-form", attrs: { novalidate: true } },
    h("label", { attrs: { for: handoverSelect.id }, text: "Hand over to another supervisor" }),
    h("div", { className: "input-row" }, handoverSelect, handoverButton),
  );
  handoverForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const to = handoverSelect.value;
    if (!to) {
      status.textContent = sentenceFor("no_handover_target");
      return;
    }
    runWithStatus(handoverButton, status, () => desk.act(view.id, EscalationAct.handover(to)), `Handed over to ${who(to)}.`);
  });
  const handoverEmpty = h("p", { className: "hint", text: "No other supervisor is on the rota to hand over to." });

  const actions = h("div", { className: "button-row esc-actions" }, ack, join, toPerson, toLead);
  // The hub sends summaries; opening any part reads the words (once, and again
  // when the escalation changes while it was read).
  const loadingHint = () => h("li", { className: "hint", text: "Reading it from the hub…" });
  const readOnOpen = (ev) => {
    if (ev.target.open && view && !entry.loaded) {
      desk.loadDetail(view.id);
    }
  };
  const details = h(
    "div",
    { className: "esc-details" },
    h("details", { className: "esc-part", on: { toggle: readOnOpen } }, flagsSummary, flagsList),
    h("details", { className: "esc-part", on: { toggle: readOnOpen } }, contextSummary, contextEmpty, contextList),
    h("details", { className: "esc-part", on: { toggle: readOnOpen } }, stepsSummary, stepsList),
  );
  const handling = h("div", { className: "esc-handling" }, noteForm, handoverForm, handoverEmpty, resolveForm);

  // ---- the private line (PROTOCOL.md §8.5) ----
  let line = null; // { group, to: [keys] } once open on this connection
  const lineSeen = new Set();
  const lineSummary = h("summary", { text: "Private line" });
  const lineHint = h("p", {
    className: "hint",
    text: "The person sees this as a private message from a supervisor. You do not join the group, and nobody else there is told.",
  });
  const lineList = h("ol", { className: "esc-list esc-line" });
  const lineTo = h("select", { id: `${id}-line-to` });
  const lineField = h("textarea", { id: `${id}-line-text`, rows: 2 });
  const lineError = h("p", { className: "field-error", id: `${id}-line-error`, hidden: true, attrs: { role: "alert" } });
  lineField.setAttribute("aria-describedby", `${id}-line-error`);
  const lineSend = h("button", { type: "submit", className: "secondary", text: "Send privately" });
  const lineForm = h(
    "form",
    { className: "esc-form", attrs: { novalidate: true } },
    h("label", { attrs: { for: lineTo.id }, text: "To" }),
    lineTo,
    h("label", { attrs: { for: lineField.id }, text: "Your message" }),
    lineField,
    lineError,
    lineSend,
  );
  const lineDetails = h("details", { className: "esc-part esc-line-part" }, lineSummary, lineHint, lineList, lineForm);
  lineDetails.addEventListener("toggle", () => {
    if (lineDetails.open && !line) {
      openLine(null).catch((err) => {
        status.textContent = errorSentence(err);
        status.dataset.tone = "error";
      });
    }
  });

  function lineWho(key) {
    if (key === me) {
      return "You";
    }
    if (view && key === view.about) {
      return who(key, { capital: true });
    }
    return nameFor(view.group, key) ?? "The facilitator";
  }

  async function onLineEvent(ev) {
    const frame = ev.detail;
    if (!view || frame?.type !== "event" || frame.group !== view.group || !frame.env) {
      return;
    }
    const keys = pairKeys(channelKey(frame.channel));
    if (!keys || !keys.includes(me) || !Number.isSafeInteger(frame.seq)) {
      return;
    }
    const tag = `${channelKey(frame.channel)}#${frame.seq}`;
    if (lineSeen.has(tag)) {
      return;
    }
    lineSeen.add(tag);
    const check = await verifyEnvelope(frame.env, { kind: Kind.POST, group: view.group });
    const item = h("li", { className: "esc-line-item" }, ...envelopeLine(check, { whoKey: frame.env.key, body: check.payload?.body }));
    if (check.verified) {
      item.querySelector(".msg-author").textContent = lineWho(frame.env.key);
    }
    lineList.append(item);
  }
  desk.conn.addEventListener("push", onLineEvent);
  // A line is open on one connection: after a new login, open it again (its
  // history comes again; what was shown is not repeated).
  desk.conn.addEventListener("authenticated", () => {
    line = null;
    if (lineDetails.open && view && view.status !== EscalationStatus.RESOLVED) {
      openLine(null).catch(() => {});
    }
  });

  /** Opens the line (once per connection) and the form, `pick`ing the person or the lead. */
  async function openLine(pick) {
    if (!line) {
      const reply = await desk.openLine(view.id);
      line = { group: reply.group, to: Array.isArray(reply.to) ? reply.to : [] };
    }
    lineTo.replaceChildren(
      ...line.to.map((k) =>
        h("option", { value: k, text: k === view.about ? who(k, { capital: true }) : `${nameFor(view.group, k) ?? "The lead facilitator"} (facilitator)` }),
      ),
    );
    const wanted = pick === "person" ? view.about : pick === "lead" ? line.to.find((k) => k !== view.about) : null;
    if (wanted && line.to.includes(wanted)) {
      lineTo.value = wanted;
    } else if (pick === "person") {
      setFieldError(lineField, lineError, "The flag asked for the person not to be told yet: write to the facilitator.");
    }
    lineSend.disabled = line.to.length === 0;
    lineDetails.open = true;
    if (pick) {
      lineField.focus();
    }
  }

  lineForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = lineField.value.trim();
    const problem = checkText(text, { required: true, limits: desk.conn.limits });
    if (problem) {
      setFieldError(lineField, lineError, sentenceFor(problem === "empty_text" ? "empty_body" : problem));
      lineField.focus();
      return;
    }
    setFieldError(lineField, lineError, "");
    if (await runWithStatus(lineSend, status, () => desk.linePost(view.id, view.group, lineTo.value, text), "Sent privately.")) {
      lineField.value = "";
    }
  });
  const li = h(
    "li",
    { className: "esc-card", attrs: { "aria-labelledby": `${id}-title` } },
    heading,
    about,
    state,
    deadline,
    actions,
    status,
    details,
    lineDetails,
    handling,
  );

  // ---- drawing ----

  function envelopeLine(check, { whoKey, body, extra = [] }) {
    if (!check.verified) {
      const raw = check.payload ? JSON.stringify(check.payload) : "";
      const hidden = h("p", { className: "unverified-text", hidden: true, text: raw });
      const reveal = h("button", {
        type: "button",
        className: "link-button",
        text: "Show it as received",
        attrs: { "aria-expanded": "false" },
        on: {
          click: () => {
            hidden.hidden = !hidden.hidden;
            reveal.setAttribute("aria-expanded", String(!hidden.hidden));
          },
        },
      });
      return [
        h("p", { className: "msg-head" }, unverifiedMark(), " ", h("span", { text: "Something that could not be checked" })),
        h("p", { className: "msg-warning", text: `${unverifiedReason(check.reason)} Don't rely on it.` }),
        raw ? reveal : null,
        hidden,
      ];
    }
    return [
      h("p", { className: "msg-head" }, h("span", { className: "msg-author", text: who(whoKey, { capital: true }), attrs: { title: keyTitle(whoKey) } }), " ", verifiedMark(), " ", ...extra),
      body ? h("p", { className: "msg-body", text: body }) : null,
    ];
  }

  function drawFlags() {
    const kept = entry.loaded ? view.flags.length : view.counts.flags;
    const counted = view.counts.counted > 0 ? `, and ${view.counts.counted} more only counted` : "";
    flagsSummary.textContent = `The flag${kept === 1 ? "" : "s"} (${kept}${counted})`;
    if (!entry.loaded) {
      flagsList.replaceChildren(loadingHint());
      return;
    }
    flagsList.replaceChildren(
      ...view.flags.map((env, i) => {
        const check = entry.checks.flags[i];
        const p = check.payload ?? {};
        const lines = [];
        if (check.verified) {
          lines.push(`${SEVERITY_LABEL[p.severity] ?? p.severity}. ${CONSENT_WORDS[p.consent] ?? ""}`);
          if (p.seq !== undefined) {
            lines.push(`Prompted by message ${p.seq} of the group.`);
          }
          if (p.reason) {
            lines.push(`Why the risk is immediate: ${p.reason}`);
          }
          if (p.withhold_notice) {
            lines.push(`Not telling the person yet, because: ${p.withhold_notice}`);
          }
          lines.push(p.note ? `Note: ${p.note}` : "No note.");
        }
        return h(
          "li",
          { className: check.verified ? "esc-item" : "esc-item msg-unverified" },
          ...envelopeLine(check, {
            whoKey: env?.key,
            body: lines.join(" "),
            extra: [check.verified ? h("time", { text: formatTime(p.ts) }) : null],
          }),
        );
      }),
    );
  }

  function drawContext() {
    const n = entry.loaded ? view.context.length : view.counts.context;
    contextSummary.textContent = `What was said before it (${n} message${n === 1 ? "" : "s"})`;
    contextEmpty.hidden = n > 0;
    if (!entry.loaded) {
      contextList.replaceChildren(...(n > 0 ? [loadingHint()] : []));
      return;
    }
    contextList.replaceChildren(
      ...view.context.map((event, i) => {
        const check = entry.checks.context[i];
        const p = check.payload ?? {};
        let body = "";
        if (check.verified) {
          body = event.env.kind === "post" ? p.body : `A facilitator action: ${String(p.action?.do ?? "").replace(/_/g, " ")}.`;
        }
        const flagged = view.flags.some((env, j) => entry.checks.flags[j]?.verified && entry.checks.flags[j].payload.seq === event.seq);
        return h(
          "li",
          { className: `esc-item${check.verified ? "" : " msg-unverified"}${flagged ? " esc-flagged" : ""}`, dataset: { seq: String(event.seq) } },
          ...envelopeLine(check, {
            whoKey: event.env?.key,
            body,
            extra: [Number.isFinite(event.ts) ? h("time", { text: formatTime(event.ts) }) : null, flagged ? h("span", { className: "badge", text: " the flagged message" }) : null],
          }),
        );
      }),
    );
  }

  function stepWords(step, check) {
    let text = STEP_WORDS[step.step] ?? step.step.replace(/_/g, " ");
    if (step.step === "routed" && Number.isSafeInteger(step.level)) {
      text += ` to level ${step.level}${Array.isArray(step.to) && step.to.length ? `: ${step.to.map((k) => who(k)).join(", ")}` : ""}`;
    }
    if (check.verified) {
      const action = check.payload.action;
      if (action?.do === "note") {
        text += `: “${action.text}”`;
      } else if (action?.do === "handover") {
        text += ` to ${who(action.to)}`;
      } else if (action?.do === "resolve") {
        text += `. Outcome: “${action.outcome}”`;
      } else if (step.step === "merged") {
        text += ` (${SEVERITY_LABEL[check.payload.severity] ?? ""})`;
      }
    }
    return text;
  }

  function drawSteps() {
    const n = entry.loaded ? view.steps.length : view.counts.steps;
    stepsSummary.textContent = `What has happened (${n} step${n === 1 ? "" : "s"})`;
    if (!entry.loaded) {
      stepsList.replaceChildren(loadingHint());
      return;
    }
    stepsList.replaceChildren(
      ...view.steps.map((step, i) => {
        const check = entry.checks.steps[i];
        const time = Number.isFinite(step.ts) ? h("time", { dateTime: new Date(step.ts).toISOString(), text: formatTime(step.ts) }) : null;
        if (check.hub) {
          return h(
            "li",
            { className: "esc-item esc-hub" },
            time,
            " ",
            h("span", { className: "hub-label", text: "The hub" }),
            ` ${stepWords(step, check)} `,
            h("span", { className: "hub-hint", text: "(not signed by a person)" }),
          );
        }
        if (!check.verified) {
          return h("li", { className: "esc-item msg-unverified" }, time, " ", ...envelopeLine(check, {}));
        }
        return h(
          "li",
          { className: "esc-item" },
          time,
          " ",
          h("span", { className: "msg-author", text: who(step.actor, { capital: true }), attrs: { title: keyTitle(step.actor) } }),
          ` ${stepWords(step, check)} `,
          verifiedMark("step"),
        );
      }),
    );
  }

  function stateWords() {
    if (view.status === EscalationStatus.RESOLVED) {
      return `Resolved${view.handler ? ` by ${who(view.handler)}` : ""}. Outcome: ${view.outcome ?? "not given"}`;
    }
    if (view.status === EscalationStatus.ACKNOWLEDGED) {
      return `${view.handler === me ? "You have it" : `Taken by ${who(view.handler)}`}. It is no longer waiting for anyone else.`;
    }
    const list = view.waitingFor.map((k) => who(k)).join(", ");
    switch (view.level) {
      case 1:
        return `Waiting to be acknowledged: level 1, the supervisor on call (${list || "nobody"}).`;
      case 2:
        return `Waiting to be acknowledged: level 2, the second line (${list || "nobody"}). Level 1 didn't answer in time.`;
      case 3:
        return `Waiting to be acknowledged: level 3, every supervisor and admin${view.waitingFor.includes(me) ? ", you included" : ""}.`;
      case LEVEL_UNANSWERED:
        return "Nobody acknowledged it in time. The person and the facilitators have been told plainly, with the helplines. It stays open until someone takes it.";
      default:
        return `Waiting to be acknowledged (level ${view.level}).`;
    }
  }

  function draw() {
    const sev = view.severity;
    li.dataset.severity = sev;
    li.dataset.status = view.status;
    li.dataset.id = String(view.id);
    heading.replaceChildren(
      h("span", { className: `severity severity-${sev}` }, h("span", { attrs: { "aria-hidden": "true" }, text: `${SEVERITY_SYMBOL[sev]} ` }), SEVERITY_LABEL[sev]),
      ` Escalation ${view.id} in group ${view.group}`,
    );
    const keyShown = about.querySelector("details")?.open ?? false;
    about.replaceChildren(
      "About ",
      h("strong", { text: who(view.about) }),
      `. ${SEVERITY_MEANING[sev][0].toUpperCase()}${SEVERITY_MEANING[sev].slice(1)}. Raised ${formatTime(view.createdMs)}. `,
      h(
        "details",
        { className: "esc-key", open: keyShown },
        h("summary", { text: "Show key" }),
        h("span", { text: `key ${shortTag(view.about)}`, attrs: { title: keyTitle(view.about) } }),
      ),
    );
    state.textContent = stateWords();
    const open = view.status === EscalationStatus.OPEN;
    const resolved = view.status === EscalationStatus.RESOLVED;
    ack.hidden = !open || Boolean(view.handler);
    actions.hidden = resolved;
    const mine = view.handler === me || isAdmin();
    handling.hidden = resolved;
    handoverForm.hidden = !mine;
    resolveForm.hidden = !mine;
    const options = supervisors().filter((k) => k !== me && k !== view.handler);
    const selected = handoverSelect.value;
    handoverSelect.replaceChildren(...options.map((k) => h("option", { value: k, text: who(k, { capital: true }), selected: k === selected })));
    handoverEmpty.hidden = !mine || options.length > 0;
    handoverButton.disabled = options.length === 0;
    drawFlags();
    drawContext();
    drawSteps();
    tick(desk.conn.clock.now());
  }

  function tick(now) {
    if (!view) {
      return;
    }
    const waiting = durationWords(Math.max(0, now - view.createdMs));
    if (view.status !== EscalationStatus.OPEN || view.deadlineMs === null) {
      deadline.hidden = view.status === EscalationStatus.RESOLVED;
      deadline.textContent = view.status === EscalationStatus.OPEN ? `Waiting ${waiting}.` : `Raised ${waiting} ago.`;
      deadline.dataset.state = "none";
      return;
    }
    deadline.hidden = false;
    const left = view.deadlineMs - now;
    if (left > 0) {
      deadline.textContent = `Time left to acknowledge: ${clock(left)} (until ${formatDateTime(view.deadlineMs).split(" at ")[1] ?? formatTime(view.deadlineMs)}). Waiting ${waiting}.`;
      deadline.dataset.state = left < 30_000 ? "soon" : "running";
    } else {
      deadline.textContent = `The time to acknowledge has run out: it is moving on to the next level. Waiting ${waiting}.`;
      deadline.dataset.state = "over";
    }
  }

  return {
    li,
    update(next) {
      entry = next;
      view = next.view;
      draw();
    },
    tick,
    redraw() {
      if (view) {
        draw();
      }
    },
    focus() {
      li.tabIndex = -1;
      li.focus();
    },
  };
}

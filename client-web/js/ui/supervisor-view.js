// The supervisor console: the escalation queue by risk, each deadline counting down,
// the on-call indicator, and the alerts (sound, notification, live region) for new
// escalations.
//
// Owns: #view-supervisor. It draws what the EscalationDesk reports, one card per
// escalation (escalation-card.js), most serious and longest waiting first; resolved
// ones move to "Resolved while this page was open". Joining a group is the app's
// business (onJoin; writing privately goes on the escalation's line, in the card): the console stays as it was
// and the top bar's on-call button brings the supervisor back.

import { COUNTDOWN_TICK_MS, ROTA_REFRESH_MS } from "../config.js";
import { normaliseDisplayName } from "../names.js";
import { EscalationStatus } from "../protocol.js";
import { formatTime } from "../time-words.js";
import { createAlerts } from "./alerts.js";
import { alertNow } from "./announcer.js";
import { byId, setFieldError } from "./dom.js";
import { createEscalationCard } from "./escalation-card.js";
import { SEVERITY_LABEL } from "./support-words.js";

export function createSupervisorView({ desk, connection, identity, signposting, nameFor, onJoin, onBack, onOpen }) {
  const me = identity.publicKey;
  const queueList = byId("queue-list");
  const queueCount = byId("queue-count");
  const queueEmpty = byId("queue-empty");
  const closedSection = byId("closed-section");
  const closedList = byId("closed-list");
  const onCallLine = byId("supervisor-oncall");
  const coverageLine = byId("supervisor-coverage");
  const nameInput = byId("supervisor-name");
  const nameError = byId("supervisor-name-error");
  byId("supervisor-key").textContent = me;
  byId("supervisor-back").addEventListener("click", () => onBack());

  const alerts = createAlerts({ button: byId("alerts-enable"), statusEl: byId("alerts-status"), onOpen });
  const cards = new Map(); // id -> card

  /** The name to join groups under, checked as the hub will; throws when missing. */
  function joiningName() {
    const checked = normaliseDisplayName(nameInput.value, connection.limits.max_name_chars);
    if (!checked.ok) {
      const text = nameInput.value.trim() ? checked.reason : "Please choose the name people will see before joining a group.";
      setFieldError(nameInput, nameError, text);
      nameInput.focus();
      throw Object.assign(new Error("name"), { code: "no_supervisor_name", handled: true });
    }
    setFieldError(nameInput, nameError, "");
    nameInput.value = checked.name;
    return checked.name;
  }

  const supervisors = () => [...new Set((desk.rota ?? []).map((e) => e.supervisor))];

  function cardFor(id) {
    let card = cards.get(id);
    if (!card) {
      card = createEscalationCard({
        desk,
        me,
        isAdmin: () => connection.roles.includes("admin"),
        nameFor,
        supervisors,
        onJoin: (group) => onJoin(group, joiningName()),
      });
      cards.set(id, card);
    }
    return card;
  }

  function renderQueue() {
    const queue = desk.queue();
    queue.forEach(({ view }, i) => {
      const card = cardFor(view.id);
      if (queueList.children[i] !== card.li) {
        queueList.insertBefore(card.li, queueList.children[i] ?? null);
      }
    });
    for (const [id, card] of cards) {
      if (!desk.open.has(id) && card.li.parentNode === queueList) {
        card.li.remove();
      }
    }
    queueCount.textContent = String(queue.length);
    queueEmpty.hidden = queue.length > 0;
    closedSection.hidden = closedList.childElementCount === 0;
  }

  function renderOnCall() {
    const now = connection.clock.now();
    const mine = desk.onCall(now);
    onCallLine.dataset.state = mine ? "on" : "off";
    if (desk.rota === null) {
      onCallLine.textContent = "Checking the rota…";
    } else if (mine) {
      onCallLine.textContent = `You are on call now (level ${mine.levels.join(" and ")}) until ${formatTime(mine.untilMs)}. New flags come to you first.`;
    } else {
      onCallLine.textContent = "You are not on call now. You still see every escalation, and flags nobody answers in time come to you too.";
    }
    coverageLine.hidden = Boolean(mine);
    coverageLine.textContent =
      signposting.onCall === false
        ? "Nobody is on call right now: flags go straight to every supervisor and admin, and people are told nobody is on call."
        : signposting.onCall
          ? "Someone else is on call: flags they don't acknowledge in time come to you."
          : "";
  }

  function alertFor(view, why) {
    const title = `${SEVERITY_LABEL[view.severity]} escalation in group ${view.group}`;
    const body = why === "new" ? "A new request for support is waiting. Open peerhub to respond." : "It has been routed to you. Open peerhub to respond.";
    alerts.alert({ title: `peerhub: ${title}`, body, tag: `escalation-${view.id}` });
    alertNow(`${title}. ${why === "new" ? "New" : "Routed to you"}, waiting to be acknowledged. It is in the supervisor console.`);
  }

  desk.addEventListener("change", (ev) => {
    const { id, entry, previous, isNew, gone } = ev.detail;
    if (gone) {
      cards.get(id)?.li.remove();
      cards.delete(id);
    } else if (entry.view.status === EscalationStatus.RESOLVED) {
      const card = cardFor(id);
      card.update(entry);
      closedList.prepend(card.li);
    } else {
      cardFor(id).update(entry);
      const open = entry.view.status === EscalationStatus.OPEN;
      if (isNew && open) {
        alertFor(entry.view, "new");
      } else if (open && entry.view.waitingFor.includes(me) && previous && !previous.waitingFor.includes(me)) {
        alertFor(entry.view, "routed");
      }
    }
    renderQueue();
  });
  desk.addEventListener("rota", () => {
    renderOnCall();
    for (const card of cards.values()) {
      card.redraw();
    }
  });
  signposting.addEventListener("change", renderOnCall);
  setInterval(() => {
    const now = connection.clock.now();
    for (const card of cards.values()) {
      card.tick(now);
    }
  }, COUNTDOWN_TICK_MS);
  setInterval(() => {
    renderOnCall();
    if (desk.isStaff() && connection.authenticated) {
      desk.loadRota();
    }
  }, ROTA_REFRESH_MS);
  renderOnCall();
  renderQueue();

  return {
    /** Sound and notifications (ui/alerts.js), for the staff app's repeats. */
    alerts,
    show() {
      renderOnCall();
      renderQueue();
    },
    /** Brings one escalation's card into view (opened from a notification). */
    focusEscalation(id) {
      const card = cards.get(id);
      if (card) {
        card.li.scrollIntoView({ block: "start" });
        card.li.querySelector("h3, h2, [tabindex]")?.focus?.();
      }
      return Boolean(card);
    },
    /** Names may have become known (a group was joined): draw the cards again. */
    refreshNames() {
      for (const card of cards.values()) {
        card.redraw();
      }
    },
  };
}

// The group screen for one GroupSession: its stages (agreement, waiting room,
// conversation, dismissed), the people, the conversation with pins and the composer,
// the private panel, and — for facilitators — the console, the staff channel and
// records.
//
// Owns: #view-group while a session is mounted. It listens to the session and hands
// each change to the widget that draws it; it sends nothing itself except through the
// session and the widgets (post, controls, agree, report, step out, records, leave).
//
//   session events ─► group-view ─┬─► group-stage (which screen, focus)
//                                 ├─► message-list (+ message-actions, pinned-list)
//                                 ├─► composer-state (why writing is blocked)
//                                 ├─► member-list (+ member-actions), waiting-room
//                                 ├─► private-panel, staff-panel, records-panel
//                                 ├─► support-now (self-flag, support notices)
//                                 └─► group-controls
//   signposting (coverage) ─► the "A supervisor is on call" line with the helplines

import { SessionState } from "../group-session.js";
import { describeErrorFrame, sentenceFor } from "../errors.js";
import { Kind, MAIN, MemberStatus } from "../protocol.js";
import { isStaffRole } from "../standing.js";
import { announce } from "./announcer.js";
import { createAgreementView } from "./agreement-view.js";
import { createComposer } from "./composer.js";
import { createComposerState } from "./composer-state.js";
import { createDismissedView } from "./dismissed-view.js";
import { byId } from "./dom.js";
import { errorSentence } from "./feedback.js";
import { createGroupControls } from "./group-controls.js";
import { createGroupStage, Stage } from "./group-stage.js";
import { openHelplines, renderHelplines } from "./helplines.js";
import { createMemberActions } from "./member-actions.js";
import { createMemberList } from "./member-list.js";
import { createMessageActions } from "./message-actions.js";
import { createMessageList } from "./message-list.js";
import { createMessageRenderer } from "./message-render.js";
import { createPinnedList } from "./pinned-list.js";
import { createPrivatePanel } from "./private-panel.js";
import { createRecordsPanel } from "./records-panel.js";
import { createStaffPanel } from "./staff-panel.js";
import { createStaffSound } from "./staff-sound.js";
import { createSupportNow } from "./support-now.js";
import { createWaitingRoom } from "./waiting-room.js";
import { isSupportNote, openRequests, requestState } from "./support-requests.js";
import { createWaitingView } from "./waiting-view.js";
import { spokenAuthor, who } from "./who.js";

const KIND_WORDS = { drop_in: "Drop-in group", virtual: "Virtual group" };

export function createGroupView({ connection, recordBook, signposting, onLeave, onRejoin }) {
  const view = byId("view-group");
  const title = byId("group-title");
  const meta = byId("group-meta");
  const banner = byId("group-banner");
  const stepOut = byId("step-out");
  const supportButton = byId("support-now");
  const consoleEl = byId("facilitator-console");
  let session = null;
  let messages = null;
  let pinned = null;
  let composerState = null;
  let memberActions = null;
  let members = null;

  const composer = createComposer({
    form: byId("composer"),
    textarea: byId("composer-input"),
    countEl: byId("composer-count"),
    errorEl: byId("composer-error"),
    getLimits: () => connection.limits,
    onSend: (body) => session?.post(body),
  });

  const privatePanel = createPrivatePanel({ connection });
  const support = createSupportNow({ privatePanel });
  const checkIn = (key) => privatePanel.open(key);
  const stage = createGroupStage({
    onEnterRoom: (previous) => {
      if (previous === Stage.WAITING || previous === Stage.AGREEMENT) {
        announce(`You're in. Welcome to ${session?.info?.title ?? "the group"}.`);
      }
      focusRoom();
    },
  });
  const agreement = createAgreementView();
  createWaitingView();

  // Whether a supervisor is on call, in the room, with the helplines when nobody is.
  const coverage = byId("coverage");
  const coverageLine = byId("coverage-line");
  const coverageList = byId("coverage-helplines");
  const coverageMore = byId("coverage-more");
  coverageMore.addEventListener("click", () => {
    if (byId("helplines").hidden) {
      byId("helplines-toggle").click();
    } else {
      byId("helplines-title").focus();
    }
  });
  renderHelplines(null, coverageList);
  function renderCoverage() {
    const onCall = signposting.onCall;
    coverage.hidden = onCall === null;
    coverage.dataset.state = onCall ? "on" : "off";
    coverageLine.textContent = onCall
      ? "A supervisor is on call: “I need support now” reaches them."
      : "No supervisor is on call right now. A request for support is kept until someone can answer. If you need help now:";
    coverageList.hidden = onCall !== false;
    coverageMore.hidden = onCall !== false;
    // The waiting room says what "I need support now" does now, not what it would do.
    byId("waiting-support-line").textContent =
      onCall === false
        ? "If something is difficult right now, you don't have to wait. No supervisor is on call right now, so “I need support now” at the top tells the facilitators of this group and every supervisor, and your request is kept until one of them can answer. The helplines answer now. You can also write privately to a facilitator."
        : onCall
          ? "If something is difficult right now, you don't have to wait: “I need support now” at the top asks the supervisor on call to offer you support and tells this group's facilitators at once, and you can write privately to a facilitator too."
          : "If something is difficult right now, you don't have to wait: “I need support now” at the top asks for support, and you can write privately to a facilitator too.";
  }
  signposting.addEventListener("change", renderCoverage);
  renderCoverage();
  const dismissed = createDismissedView({ onRejoin: () => onRejoin(session), onHome: () => onLeave() });
  const waitingRoom = createWaitingRoom({ onCheckIn: checkIn });
  const controls = createGroupControls();
  const staff = createStaffPanel({ onCheckIn: checkIn });
  const records = createRecordsPanel({ recordBook });

  // Leaving is guarded: it sits near "I need support now", and a slip would cost the
  // person their place. Quick exit is the unguarded way out.
  const leaveButton = byId("leave-group");
  const leaveConfirm = byId("leave-confirm");
  leaveButton.addEventListener("click", () => {
    leaveConfirm.hidden = false;
    leaveButton.setAttribute("aria-expanded", "true");
    byId("leave-confirm-no").focus();
  });
  const cancelLeave = () => {
    leaveConfirm.hidden = true;
    leaveButton.setAttribute("aria-expanded", "false");
  };
  byId("leave-confirm-no").addEventListener("click", () => {
    cancelLeave();
    leaveButton.focus();
  });
  byId("leave-confirm-yes").addEventListener("click", () => {
    cancelLeave();
    onLeave({ left: true });
  });
  // The top bar's "I need support now": in a group, the self-flag; elsewhere (the
  // start and join screens, where there is no group to ask in yet) the helplines.
  supportButton.addEventListener("click", () => (session ? support.request() : openHelplines()));

  // On a phone the people and the console are sheets over the conversation; on a
  // desktop they are columns, and these buttons are not shown.
  const sheetButtons = { people: byId("sheet-people"), console: byId("sheet-console") };
  function setSheet(name) {
    const now = view.dataset.sheet === name ? "" : name;
    view.dataset.sheet = now;
    for (const [key, button] of Object.entries(sheetButtons)) {
      button.setAttribute("aria-expanded", String(key === now));
    }
    document.body.classList.toggle("sheet-open", Boolean(now));
    if (now === "people") {
      byId("members-panel").open = true;
      byId("members-panel").querySelector("summary")?.focus();
    } else if (now === "console") {
      [...byId("side-column").querySelectorAll("h2")].find((el) => el.offsetParent !== null)?.focus();
    }
  }
  // The console button says how many are waiting to be let in (a phone shows the
  // waiting room only in the console sheet).
  const waitingCount = byId("waiting-count");
  const consoleCount = byId("sheet-console-count");
  const sound = createStaffSound();
  let waitingBefore = 0;
  function renderConsoleButton() {
    const waitingNow = Number(waitingCount.textContent) || 0;
    if (session?.canModerate() && waitingNow > waitingBefore) {
      sound.chime(); // someone new is waiting to be let in
    }
    waitingBefore = waitingNow;
    const moderator = session?.canModerate() ?? false;
    byId("sheet-console-text").textContent = moderator ? "Console" : "Records";
    const n = Number(waitingCount.textContent) || 0;
    consoleCount.hidden = !moderator || n === 0;
    consoleCount.textContent = n ? `${n} waiting` : "";
  }
  new MutationObserver(renderConsoleButton).observe(waitingCount, { childList: true, characterData: true, subtree: true });
  // A record written about a participant shows the "Records" button.
  new MutationObserver(() => {
    if (session && stage.current === Stage.ROOM) {
      sheetButtons.console.hidden = !session.canModerate() && byId("records-panel").hidden;
    }
  }).observe(byId("records-panel"), { attributes: true, attributeFilter: ["hidden"] });
  sheetButtons.people.addEventListener("click", () => setSheet("people"));
  sheetButtons.console.addEventListener("click", () => setSheet("console"));
  for (const button of view.querySelectorAll("[data-close-sheet]")) {
    button.addEventListener("click", () => {
      const open = view.dataset.sheet;
      setSheet("");
      sheetButtons[open]?.focus();
    });
  }
  for (const id of ["members-panel", "side-column"]) {
    byId(id).addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && view.dataset.sheet) {
        const open = view.dataset.sheet;
        setSheet("");
        sheetButtons[open]?.focus();
      }
    });
  }
  stepOut.addEventListener("click", async () => {
    if (!session) {
      return;
    }
    const away = !(session.me()?.away === true);
    stepOut.disabled = true;
    try {
      await session.stepOut(away);
      announce(away ? "You've stepped out. The facilitators see you as away; the group isn't told why." : "Welcome back.");
    } catch (err) {
      setBanner(errorSentence(err), "error");
    } finally {
      stepOut.disabled = false;
    }
  });

  function setBanner(text, tone = "info") {
    banner.textContent = text;
    banner.dataset.tone = tone;
    banner.hidden = !text;
  }

  function focusRoom() {
    const textarea = byId("composer-input");
    if (!textarea.disabled) {
      composer.focus();
    } else {
      title.focus();
    }
  }

  function describeSelf() {
    meta.replaceChildren(`${KIND_WORDS[session.info?.kind] ?? "Group"} · You are here as ${session.name}`);
  }

  /** What depends on whether we moderate this group. */
  function applyPowers() {
    const moderator = session.canModerate();
    view.classList.toggle("is-facilitator", moderator);
    consoleEl.hidden = !moderator;
    sheetButtons.console.hidden = !moderator && byId("records-panel").hidden;
    renderConsoleButton();
    staff.setVisible(moderator);
    supportButton.hidden = moderator || Boolean(session.dismissal);
    // The kind of per-person actions depends on our powers: build them again.
    memberActions?.clear();
    members?.refresh();
    records.render();
    waitingRoom.render();
    controls.render();
  }

  function applyStage({ focus = true } = {}) {
    if (session.status === null) {
      return; // the first `joined` is still being applied
    }
    // First, so that focus lands in an enabled composer when the room opens.
    composerState.update();
    const { stage: now, again } = stage.apply(session, { focus });
    if (now === Stage.AGREEMENT || again) {
      agreement.show(session, { again });
    }
    if (now === Stage.DISMISSED) {
      dismissed.show(session.dismissal, session.groupState);
    }
    stepOut.hidden = now !== Stage.ROOM;
    // "I need support now" stays in the top bar on every stage, dismissed included.
    supportButton.hidden = session.canModerate();
    // The dismissed screen has its own "Back to the start".
    byId("leave-group").hidden = now === Stage.DISMISSED;
    if (now === Stage.DISMISSED) {
      byId("leave-confirm").hidden = true;
    }
    sheetButtons.people.hidden = now !== Stage.ROOM;
    sheetButtons.console.hidden = now !== Stage.ROOM || (!session.canModerate() && byId("records-panel").hidden);
    if (now !== Stage.ROOM && view.dataset.sheet) {
      setSheet("");
    }
    support.refresh();
  }

  function renderStepOut() {
    const away = session.me()?.away === true;
    stepOut.textContent = away ? "I'm back" : "Step out";
  }

  // The people list shows the room; the waiting room is listed in the console.
  const inRoomList = (m) =>
    m.facilitator ||
    isStaffRole(m.roles) ||
    m.status === MemberStatus.ADMITTED ||
    (m.status === MemberStatus.NEEDS_AGREEMENT && m.seenInRoom);

  const listeners = {
    state: (ev) => {
      const { state, error } = ev.detail;
      if (state === SessionState.REJOINING) {
        setBanner("Reconnecting to the group. Messages you write now will be sent when you're back.");
      } else if (state === SessionState.JOINED || state === SessionState.DISMISSED) {
        setBanner("");
      } else if (state === SessionState.FAILED) {
        setBanner(
          `You're no longer connected to this group. ${error?.frame ? describeErrorFrame(error.frame) : sentenceFor(error?.code)}`,
          "error",
        );
      }
    },
    joined: (ev) => {
      const { info, members: records } = ev.detail;
      title.textContent = info.title || info.id;
      // The tab title stays "peerhub": a group's topic in a tab or task bar can tell
      // an onlooker more than the person wants.
      describeSelf();
      members.setAll(records);
      applyPowers();
      applyStage();
      renderStepOut();
      pinned.render();
      byId("sheet-people-count").textContent = `(${byId("member-count").textContent})`;
    },
    member: (ev) => {
      const { record, previous } = ev.detail;
      members.upsert(record);
      byId("sheet-people-count").textContent = `(${byId("member-count").textContent})`;
      waitingRoom.onMember(ev.detail);
      privatePanel.refreshNames();
      records.membersChanged();
      if (record.self) {
        renderStepOut();
        if (record.facilitator !== previous?.facilitator) {
          applyPowers();
          messages.redrawAll([...session.log(MAIN).values()]);
        }
        composerState.update();
      }
    },
    event: (ev) => {
      const { record, live } = ev.detail;
      if (isSupportNote(record)) {
        // Someone asked for support (or it closed): the console shows it on them.
        members.refresh();
        waitingRoom.render();
      }
      if (record.channel !== MAIN) {
        if (live && record.from === "hub" && record.note?.note === "risk_nudge" && session.canModerate()) {
          sound.chime(); // the hub noticed a possible risk: worth a look
        }
        return;
      }
      messages.addEvent(ev.detail);
      if ((session.groupState?.pinned ?? []).includes(record.seq)) {
        pinned.render();
      }
      if (live && !record.self) {
        announceEvent(record);
      }
    },
    "event-changed": (ev) => {
      const { record } = ev.detail;
      if (record.channel === MAIN) {
        messages.updateEvent(record);
        pinned.render();
        staff.refresh();
      }
    },
    outbox: (ev) => {
      if (!ev.detail.to) {
        messages.upsertOutbox(ev.detail);
      }
    },
    "group-state": (ev) => {
      const { state, previous } = ev.detail;
      const pinsChanged = previous && previous.pinned.join() !== state.pinned.join();
      pinned.render();
      controls.render();
      if (pinsChanged) {
        // Each message's menu offers Pin or Unpin.
        for (const seq of new Set([...previous.pinned, ...state.pinned])) {
          const record = session.log(MAIN).get(seq);
          if (record) {
            messages.updateEvent(record);
          }
        }
      }
      if (previous && previous.co_facilitators.join() !== state.co_facilitators.join()) {
        applyPowers();
        members.refresh();
      }
      applyStage();
    },
    standing: () => applyStage(),
    dismissed: () => {
      privatePanel.close();
      applyStage();
    },
  };

  function announceEvent(record) {
    if (record.from === "hub") {
      if (record.note?.note === "mute_ended") {
        announce(
          record.note.member === session.identity.publicKey
            ? "Your mute has ended. You can write to the group again."
            : `From the hub: ${who(session, record.note.member, { capital: true })} can write again.`,
        );
      }
      return;
    }
    if (!record.verified) {
      announce("New unverified message. Its sender could not be checked.");
      return;
    }
    if (record.kind === Kind.POST) {
      announce(`${spokenAuthor(session, record.key)}: ${record.payload.body}`);
    } else if (record.kind === Kind.CONTROL) {
      const el = messages.elementFor(record.seq);
      if (el) {
        announce(el.querySelector(".control-text span")?.textContent ?? "");
      }
    }
  }

  return {
    /** Starts drawing `s`; the view is cleared first. */
    mount(s) {
      this.unmount();
      session = s;
      const messageActions = createMessageActions({ session: s });
      const renderer = createMessageRenderer({ session: s, extrasFor: messageActions });
      messages = createMessageList(byId("message-list"), byId("empty-log"), { renderer });
      pinned = createPinnedList({ session: s, messages });
      composerState = createComposerState({ session: s, composer, element: byId("composer-state") });
      memberActions = createMemberActions({ session: s, onCheckIn: checkIn });
      members = createMemberList(byId("member-list"), byId("member-count"), byId("member-online-count"), {
        include: inRoomList,
        describe: (m) => {
          const words = [];
          if (s.groupState?.lead === m.key) {
            words.push("lead facilitator");
          }
          if (m.away) {
            words.push("stepped out");
          }
          if (Number.isFinite(m.mutedUntilMs) && m.mutedUntilMs > s.conn.clock.now()) {
            words.push("muted");
          }
          if (m.status === MemberStatus.NEEDS_AGREEMENT) {
            words.push("reading the new agreement");
          }
          const asked = s.canModerate() ? requestState(openRequests(s).get(m.key)) : null;
          if (asked) {
            words.push(asked);
          }
          return words;
        },
        actionsFor: (m) => memberActions.actionsFor(m),
      });
      messages.clear();
      members.clear();
      composer.reset();
      stage.reset();
      setBanner("");
      title.textContent = s.info?.title ?? s.groupId;
      meta.textContent = "";
      // On narrow screens the people list starts folded so the conversation comes first.
      byId("members-panel").open = !globalThis.matchMedia?.("(max-width: 51.99rem)").matches;
      privatePanel.mount(s);
      support.mount(s);
      waitingRoom.mount(s);
      controls.mount(s);
      staff.mount(s);
      consoleEl.hidden = true;
      view.classList.remove("is-facilitator");
      view.dataset.sheet = "";
      byId("leave-confirm").hidden = true;
      for (const [type, fn] of Object.entries(listeners)) {
        s.addEventListener(type, fn);
      }
      records.mount(s);
    },

    unmount() {
      if (!session) {
        return;
      }
      for (const [type, fn] of Object.entries(listeners)) {
        session.removeEventListener(type, fn);
      }
      composerState?.stop();
      privatePanel.unmount();
      support.unmount();
      waitingRoom.unmount();
      controls.unmount();
      staff.unmount();
      records.unmount();
      memberActions?.clear();
      session = null;
      messages?.clear();
      members?.clear();
      composer.reset();
      stage.reset();
      consoleEl.hidden = true;
      view.classList.remove("is-facilitator");
      view.dataset.sheet = "";
      document.body.classList.remove("sheet-open");
      supportButton.hidden = false;
    },

    /** Moves focus to where the current stage starts (after the screen is shown). */
    /** Shows a `support_notice` if it is about the group on screen; returns whether it did. */
    supportNotice(frame) {
      return support.notice(frame);
    },

    focusStage() {
      if (!session) {
        return;
      }
      const current = stage.current;
      if (current === Stage.ROOM && session.status !== MemberStatus.NEEDS_AGREEMENT) {
        focusRoom();
      } else {
        const id = { agreement: "agreement-title", waiting: "waiting-title", dismissed: "dismissed-title", room: "agreement-title" }[current];
        byId(id ?? "group-title").focus();
      }
    },
  };
}

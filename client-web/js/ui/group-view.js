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
import { fingerprint, shortTag } from "../encoding.js";
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
import { renderHelplines } from "./helplines.js";
import { createMemberActions } from "./member-actions.js";
import { createMemberList } from "./member-list.js";
import { createMessageActions } from "./message-actions.js";
import { createMessageList } from "./message-list.js";
import { createMessageRenderer } from "./message-render.js";
import { createPinnedList } from "./pinned-list.js";
import { createPrivatePanel } from "./private-panel.js";
import { createRecordsPanel } from "./records-panel.js";
import { createStaffPanel } from "./staff-panel.js";
import { createSupportNow } from "./support-now.js";
import { createWaitingRoom } from "./waiting-room.js";
import { isSupportNote, openRequests, requestState } from "./support-requests.js";
import { createWaitingView } from "./waiting-view.js";
import { who } from "./who.js";

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
  createWaitingView({ onSupport: () => support.request() });
  byId("dismissed-support").addEventListener("click", () => support.request());

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
  }
  signposting.addEventListener("change", renderCoverage);
  renderCoverage();
  const dismissed = createDismissedView({ onRejoin: () => onRejoin(session), onHome: () => onLeave() });
  const waitingRoom = createWaitingRoom({ onCheckIn: checkIn });
  const controls = createGroupControls();
  const staff = createStaffPanel({ onCheckIn: checkIn });
  const records = createRecordsPanel({ recordBook });

  byId("leave-group").addEventListener("click", () => onLeave());
  supportButton.addEventListener("click", () => support.request());
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
    const me = session.identity.publicKey;
    meta.replaceChildren(
      `${KIND_WORDS[session.info?.kind] ?? "Group"} · You are here as ${session.name} (key ${shortTag(me)})`,
    );
    meta.title = `Your key ${fingerprint(me)}`;
  }

  /** What depends on whether we moderate this group. */
  function applyPowers() {
    const moderator = session.canModerate();
    view.classList.toggle("is-facilitator", moderator);
    consoleEl.hidden = !moderator;
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
    supportButton.hidden = session.canModerate() || now === Stage.DISMISSED;
    // The dismissed screen has its own "Back to the start" and "I need support now".
    byId("leave-group").hidden = now === Stage.DISMISSED;
    byId("dismissed-support-row").hidden = now !== Stage.DISMISSED;
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
    },
    member: (ev) => {
      const { record, previous } = ev.detail;
      members.upsert(record);
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
      const member = session.member(record.key);
      const name = member?.verified ? member.name : "someone whose name is not verified";
      announce(`${name}: ${record.payload.body}`);
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
    },

    /** Moves focus to where the current stage starts (after the screen is shown). */
    /** Shows a `support_notice` if it is about the group on screen; returns whether it did. */
    supportNotice(frame) {
      return support.notice(frame);
    },

    /** Opens the private conversation with `key` (a supervisor's console uses it). */
    openPrivate(key) {
      if (session) {
        privatePanel.open(key);
      }
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

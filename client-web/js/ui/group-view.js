// The group screen: title, people, conversation and composer for one GroupSession.
//
// Owns: #view-group while a session is mounted. It listens to the session and draws;
// it sends nothing itself except through the session (post, retry, discard, leave).

import { SessionState } from "../group-session.js";
import { describeErrorFrame, sentenceFor } from "../errors.js";
import { fingerprint, shortTag } from "../encoding.js";
import { announce } from "./announcer.js";
import { createComposer } from "./composer.js";
import { byId } from "./dom.js";
import { createMemberList } from "./member-list.js";
import { createMessageList } from "./message-list.js";

const KIND_WORDS = { drop_in: "Drop-in group", virtual: "Virtual group" };

export function createGroupView({ connection, onLeave }) {
  const title = byId("group-title");
  const meta = byId("group-meta");
  const banner = byId("group-banner");
  const members = createMemberList(byId("member-list"), byId("member-count"), byId("member-online-count"));
  let session = null;
  let messages = null;

  const composer = createComposer({
    form: byId("composer"),
    textarea: byId("composer-input"),
    countEl: byId("composer-count"),
    errorEl: byId("composer-error"),
    getLimits: () => connection.limits,
    onSend: (body) => session?.post(body),
  });

  byId("leave-group").addEventListener("click", () => onLeave());

  function setBanner(text, tone = "info") {
    banner.textContent = text;
    banner.dataset.tone = tone;
    banner.hidden = !text;
  }

  function describeSelf() {
    const me = session.identity.publicKey;
    meta.replaceChildren(
      `${KIND_WORDS[session.info?.kind] ?? "Group"} · You are here as ${session.name} (key ${shortTag(me)})`,
    );
    meta.title = `Your key ${fingerprint(me)}`;
  }

  const listeners = {
    state: (ev) => {
      const { state, error } = ev.detail;
      if (state === SessionState.REJOINING) {
        setBanner("Reconnecting to the group. Messages you write now will be sent when you're back.");
      } else if (state === SessionState.JOINED) {
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
    },
    member: (ev) => members.upsert(ev.detail),
    event: (ev) => {
      const { record, live } = ev.detail;
      messages.addEvent(ev.detail);
      if (live && !record.self) {
        announceEvent(record);
      }
    },
    outbox: (ev) => messages.upsertOutbox(ev.detail),
  };

  function announceEvent(record) {
    if (!record.verified) {
      announce("New unverified message. Its sender could not be checked.");
      return;
    }
    if (record.kind === "post") {
      const member = session.member(record.key);
      const name = member?.verified ? member.name : "someone whose name is not verified";
      announce(`${name}: ${record.payload.body}`);
    }
  }

  return {
    /** Starts drawing `s`; the view is cleared first. */
    mount(s) {
      this.unmount();
      session = s;
      messages = createMessageList(byId("message-list"), byId("empty-log"), { session });
      messages.clear();
      members.clear();
      composer.reset();
      setBanner("");
      title.textContent = s.info?.title ?? s.groupId;
      // On narrow screens the people list starts folded so the conversation comes first.
      byId("members-panel").open = !globalThis.matchMedia?.("(max-width: 51.99rem)").matches;
      for (const [type, fn] of Object.entries(listeners)) {
        s.addEventListener(type, fn);
      }
    },

    unmount() {
      if (!session) {
        return;
      }
      for (const [type, fn] of Object.entries(listeners)) {
        session.removeEventListener(type, fn);
      }
      session = null;
      messages?.clear();
      members.clear();
      composer.reset();
    },

    focusComposer() {
      composer.focus();
    },
  };
}

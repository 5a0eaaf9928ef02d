// Which part of the group screen a person is on: the agreement, the waiting room, the
// conversation, or the "you're no longer in the group" screen.
//
// Owns: #view-group's data-stage and the stage sections' `hidden`. It moves focus to
// the new stage's heading whenever the stage changes, so screen reader users hear
// where they are; the conversation's first arrival focuses the composer instead.
//
//   dismissed                         ─► "dismissed"
//   needs_agreement, not in the room  ─► "agreement"
//   not in the room                   ─► "waiting"
//   in the room                       ─► "room" (plus the agreement card above it when
//                                        asked to agree again)

import { MemberStatus } from "../protocol.js";
import { byId } from "./dom.js";

export const Stage = Object.freeze({
  AGREEMENT: "agreement",
  WAITING: "waiting",
  ROOM: "room",
  DISMISSED: "dismissed",
});

export function stageOf(session) {
  if (session.dismissal) {
    return Stage.DISMISSED;
  }
  if (!session.inRoom) {
    return session.status === MemberStatus.NEEDS_AGREEMENT ? Stage.AGREEMENT : Stage.WAITING;
  }
  return Stage.ROOM;
}

export function createGroupStage({ onEnterRoom }) {
  const view = byId("view-group");
  const sections = {
    agreement: byId("stage-agreement"),
    waiting: byId("stage-waiting"),
    dismissed: byId("stage-dismissed"),
  };
  let current = null;
  let askingAgain = false;

  return {
    /** Applies the stage for `session`; returns it. `focus`: move focus on change. */
    apply(session, { focus = true } = {}) {
      const stage = stageOf(session);
      const again = stage === Stage.ROOM && session.status === MemberStatus.NEEDS_AGREEMENT;
      view.dataset.stage = stage;
      sections.agreement.hidden = !(stage === Stage.AGREEMENT || again);
      sections.waiting.hidden = stage !== Stage.WAITING;
      sections.dismissed.hidden = stage !== Stage.DISMISSED;
      const changed = stage !== current || again !== askingAgain;
      const previous = current;
      current = stage;
      askingAgain = again;
      if (changed && focus) {
        if (stage === Stage.ROOM && !again) {
          onEnterRoom(previous);
        } else {
          const section = again ? sections.agreement : sections[stage];
          section.querySelector("h2")?.focus();
        }
      }
      return { stage, again, changed };
    },
    reset() {
      current = null;
      askingAgain = false;
      view.dataset.stage = Stage.ROOM;
      for (const section of Object.values(sections)) {
        section.hidden = true;
      }
    },
    get current() {
      return current;
    },
  };
}

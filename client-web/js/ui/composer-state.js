// The sentence near the composer that says why writing to the group is not possible
// now (or what is different about it), and the composer's enabled state.
//
// Owns: #composer-state. It asks the session (standing.js rules) whether a post can
// be sent; when a mute or slow mode runs out it counts down, once a second, in the
// visible text only. Screen readers hear the change of state through the announcer
// ("You can write to the group again."), not every tick: the sentence itself is tied
// to the message field with aria-describedby.

import { durationWords, formatDateTime, formatTime } from "../time-words.js";
import { announce } from "./announcer.js";

function sentence(block, session) {
  const now = session.conn.clock.now();
  switch (block.code) {
    case "agreement_required":
      return "To write, please read the group agreement above and agree to it.";
    case "waiting":
      return "You're in the waiting room. You can write here once a facilitator lets you in.";
    case "closed":
      return block.nextSessionMs
        ? `No session is open right now. The next one opens ${formatDateTime(block.nextSessionMs)}.`
        : "No session is open right now.";
    case "paused":
      return "A facilitator has paused the conversation: only facilitators can write for now. You can still write privately to a facilitator.";
    case "muted":
      return `A facilitator has muted you for a while. You can write to the group again in ${durationWords(block.untilMs - now)} (at ${formatTime(block.untilMs)}). You can still write privately to a facilitator.`;
    case "slow_mode":
      return `Slow mode is on: you can send your next message in ${durationWords(block.untilMs - now)}.`;
    case "removed":
      return "You can't write in this group any more.";
    default:
      return "";
  }
}

function notes(session) {
  const state = session.groupState;
  if (!state) {
    return "";
  }
  const parts = [];
  if (state.paused && session.canModerate()) {
    parts.push("The conversation is paused: only facilitators can write.");
  }
  if (state.slow_mode_secs > 0) {
    parts.push(
      session.canModerate()
        ? `Slow mode is on for participants (${state.slow_mode_secs} seconds between messages).`
        : `Slow mode is on: one message every ${state.slow_mode_secs} seconds each.`,
    );
  }
  if (state.locked) {
    parts.push("The group is locked: nobody new can come in.");
  }
  return parts.join(" ");
}

export function createComposerState({ session, composer, element }) {
  let timer = null;
  let lastCode = null;

  function update() {
    clearTimeout(timer);
    const block = session.postingBlock();
    const text = block ? sentence(block, session) : notes(session);
    element.textContent = text;
    element.hidden = !text;
    element.dataset.tone = block ? "blocked" : "info";
    composer.setEnabled(!block);
    const code = block?.code ?? null;
    if (lastCode && !code && (lastCode === "muted" || lastCode === "paused" || lastCode === "slow_mode")) {
      announce("You can write to the group again.");
    }
    lastCode = code;
    if (block?.untilMs) {
      timer = setTimeout(update, 1000);
    }
  }

  return {
    update,
    stop() {
      clearTimeout(timer);
      lastCode = null;
    },
  };
}

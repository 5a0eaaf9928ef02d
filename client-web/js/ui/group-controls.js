// The group controls in the facilitator console: what the group is like now, lock
// and unlock, pause and resume, slow mode, a new agreement, ending the session (after
// a plain confirmation) and opening a new one.
//
// Owns: the "The group now" part of #facilitator-console. Each button sends one
// signed control through the session; the new state arrives as `group_update`, and
// `render()` draws it.

import { sentenceFor } from "../errors.js";
import { checkText, Control, MAX_SLOW_MODE_SECS } from "../protocol.js";
import { formatDateTime } from "../time-words.js";
import { byId, setFieldError } from "./dom.js";
import { runWithStatus } from "./feedback.js";
import { facilitatorName } from "./who.js";

export function createGroupControls() {
  const summary = byId("controls-summary");
  const result = byId("controls-result");
  const lock = byId("control-lock");
  const pause = byId("control-pause");
  const slowForm = byId("slow-form");
  const slowInput = byId("slow-seconds");
  const slowError = byId("slow-error");
  const agreementEditor = byId("agreement-editor");
  const agreementForm = byId("agreement-form");
  const agreementInput = byId("agreement-new");
  const agreementError = byId("agreement-new-error");
  const end = byId("control-end");
  const endConfirm = byId("end-confirm");
  const endYes = byId("end-confirm-yes");
  const endNo = byId("end-confirm-no");
  const open = byId("control-open");
  let session = null;

  const send = (button, action, done) =>
    session ? runWithStatus(button, result, () => session.control(action), done) : Promise.resolve(false);

  lock.addEventListener("click", () => {
    const locked = session?.groupState?.locked;
    send(lock, locked ? Control.unlock() : Control.lock(), locked ? "Unlocked: new people can come in." : "Locked: nobody new can come in.");
  });
  pause.addEventListener("click", () => {
    const paused = session?.groupState?.paused;
    send(pause, paused ? Control.resume() : Control.pause(), paused ? "Resumed: everyone can write." : "Paused: only facilitators can write.");
  });
  slowForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const seconds = Number(slowInput.value);
    if (!Number.isInteger(seconds) || seconds < 0 || seconds > MAX_SLOW_MODE_SECS) {
      setFieldError(slowInput, slowError, sentenceFor("invalid_seconds"));
      slowInput.focus();
      return;
    }
    setFieldError(slowInput, slowError, "");
    send(
      slowForm.querySelector("button"),
      Control.slowMode(seconds),
      seconds ? `Slow mode: one message every ${seconds} seconds each.` : "Slow mode is off.",
    );
  });
  agreementForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = agreementInput.value.trim();
    const problem = checkText(text, { limits: session?.conn.limits });
    if (problem) {
      setFieldError(agreementInput, agreementError, sentenceFor(problem));
      agreementInput.focus();
      return;
    }
    setFieldError(agreementInput, agreementError, "");
    const ok = await send(
      agreementForm.querySelector("button"),
      Control.setAgreement(text),
      "The new agreement is in force. Everyone is asked to agree again, you included.",
    );
    if (ok) {
      agreementEditor.open = false;
    }
  });
  end.addEventListener("click", () => {
    endConfirm.hidden = false;
    end.hidden = true;
    endYes.focus();
  });
  endNo.addEventListener("click", () => {
    endConfirm.hidden = true;
    end.hidden = false;
    end.focus();
  });
  endYes.addEventListener("click", async () => {
    const ok = await send(endYes, Control.endSession(), "The session has ended. Participants have been told.");
    endConfirm.hidden = true;
    end.hidden = false;
    render();
    if (ok) {
      open.focus();
    }
  });
  open.addEventListener("click", async () => {
    const ok = await send(open, Control.openSession(), "A new session is open.");
    if (ok) {
      end.focus();
    }
  });

  function render() {
    const state = session?.groupState;
    if (!state) {
      return;
    }
    const parts = [
      state.session_open ? `Session ${state.session} is open.` : `No session is open (the last was session ${state.session}).`,
    ];
    if (state.session_open && !state.door_open) {
      parts.push("It is outside the scheduled times, so the door is closed to new people.");
    }
    if (!state.session_open && state.next_session_ms) {
      parts.push(`The next scheduled opening is ${formatDateTime(state.next_session_ms)}.`);
    }
    parts.push(state.locked ? "Locked: nobody new can come in." : "Not locked.");
    parts.push(state.paused ? "Paused: only facilitators can write." : "Not paused.");
    parts.push(state.slow_mode_secs ? `Slow mode: ${state.slow_mode_secs} seconds.` : "Slow mode off.");
    if (state.lead) {
      parts.push(`Lead facilitator: ${state.lead === session.identity.publicKey ? "you" : facilitatorName(session, state.lead)}.`);
    }
    parts.push(`Agreement version ${state.agreement.version}.`);
    summary.textContent = parts.join(" ");
    lock.textContent = state.locked ? "Unlock" : "Lock";
    pause.textContent = state.paused ? "Resume" : "Pause";
    if (document.activeElement !== slowInput) {
      slowInput.value = String(state.slow_mode_secs);
    }
    if (!agreementEditor.open) {
      agreementInput.value = state.agreement.text;
    }
    end.hidden = !state.session_open || !endConfirm.hidden;
    if (!state.session_open) {
      endConfirm.hidden = true;
    }
    open.hidden = state.session_open;
  }

  return {
    mount(s) {
      session = s;
      result.textContent = "";
      endConfirm.hidden = true;
      agreementEditor.open = false;
    },
    unmount() {
      session = null;
    },
    render,
  };
}

// Saying how a request went: the one way every console button reports back.
//
// Owns: nothing but the words' placement. The sentence for a refusal comes from
// errors.js; the "done" words from the caller.

import { describeErrorFrame, sentenceFor } from "../errors.js";

/** The sentence for a refused or failed request. */
export function errorSentence(err) {
  return err?.frame ? describeErrorFrame(err.frame) : sentenceFor(err?.code);
}

/**
 * Runs `send()` with `button` disabled, then writes `done` (or the refusal) into
 * `statusEl` (a role="status" element). Resolves true when it succeeded.
 */
export async function runWithStatus(button, statusEl, send, done) {
  if (button) {
    button.disabled = true;
  }
  statusEl.textContent = "Sending…";
  statusEl.dataset.tone = "info";
  try {
    await send();
    statusEl.textContent = done;
    statusEl.dataset.tone = "success";
    return true;
  } catch (err) {
    statusEl.textContent = errorSentence(err);
    statusEl.dataset.tone = "error";
    return false;
  } finally {
    if (button) {
      button.disabled = false;
    }
  }
}

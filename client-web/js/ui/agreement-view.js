// The group agreement and the "I agree" button.
//
// Owns: #stage-agreement. Shows the agreement in force (from the group state) and
// sends a signed `agree` for its version. The text itself comes from the hub: when a
// facilitator's signed `set_agreement` with the same text is in the conversation this
// browser holds, it says who set it and that it was verified; version 1 comes with
// the group, and is said to.

import { describeErrorFrame, sentenceFor } from "../errors.js";
import { byId, h } from "./dom.js";
import { who } from "./who.js";

export function createAgreementView() {
  const intro = byId("agreement-intro");
  const textEl = byId("agreement-text");
  const source = byId("agreement-source");
  const error = byId("agreement-error");
  const accept = byId("agreement-accept");
  let session = null;

  accept.addEventListener("click", async () => {
    if (!session) {
      return;
    }
    error.hidden = true;
    accept.disabled = true;
    accept.textContent = "Sending…";
    try {
      await session.agree();
      // The presence (and, from the waiting room, the next screen) follows.
    } catch (err) {
      error.textContent = err.frame ? describeErrorFrame(err.frame) : sentenceFor(err.code);
      error.hidden = false;
    } finally {
      accept.disabled = false;
      accept.textContent = "I agree";
    }
  });

  return {
    /** Draws the agreement in force for `s`; `again`: already in the room, asked to agree. */
    show(s, { again }) {
      session = s;
      const agreement = s.groupState?.agreement ?? { version: 0, text: "" };
      if (again && s.isStaff()) {
        intro.textContent =
          "You're in the room already. Please read the group agreement in force and agree to it before you write: everyone here is asked to.";
      } else if (again) {
        intro.textContent =
          "The group agreement has changed. You can keep reading, and you'll be able to write again once you've read it and agreed.";
      } else {
        intro.textContent = "Before you come in, please read the group agreement. Everyone here has agreed to it.";
      }
      textEl.textContent = agreement.text;
      const control = s.agreementControl();
      if (control) {
        source.replaceChildren(`Version ${agreement.version}, set by ${who(s, control.key)}.`);
      } else if (agreement.version <= 1) {
        source.replaceChildren(`Version ${agreement.version}, set when the group was created.`);
      } else {
        source.replaceChildren(
          h("span", { text: `Version ${agreement.version}. This device hasn't got the part of the conversation that says who changed it.` }),
        );
      }
      error.hidden = true;
    },
    reset() {
      session = null;
      textEl.textContent = "";
      error.hidden = true;
    },
  };
}

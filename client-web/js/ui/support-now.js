// "I need support now": what happens when a person asks for help.
//
// Owns: the request, as a list of steps run in order. Today:
//   1. open the private panel to the lead facilitator, with "I need support now"
//      written in for them (sending stays their choice), or — when no facilitator
//      has arrived — the panel's "nobody to write to yet" words;
//   2. show the helplines beside it.
// The distress flag to the on-call supervisors will be one more step (a signed flag
// through the session, told back to the person); adding it means adding a step here,
// and every button that asks for support already comes through `request`.

import { SUPPORT_MESSAGE } from "../config.js";

/** Steps take the context { session, privatePanel } and may be async. */
const openPrivateToLead = ({ session, privatePanel }) => {
  privatePanel.open(session.lead(), { prefill: SUPPORT_MESSAGE });
};

const showHelplines = ({ privatePanel }) => {
  privatePanel.showHelplines();
};

export const SUPPORT_STEPS = [openPrivateToLead, showHelplines];

export function createSupportNow({ privatePanel, steps = SUPPORT_STEPS }) {
  let session = null;
  return {
    mount(s) {
      session = s;
    },
    unmount() {
      session = null;
    },
    async request() {
      if (!session) {
        return;
      }
      const context = { session, privatePanel };
      for (const step of steps) {
        await step(context);
      }
    },
  };
}

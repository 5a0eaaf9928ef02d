// Messages a facilitator pinned, shown above the conversation.
//
// Owns: #pinned and its list. The pins come from the group state (unsigned, from the
// hub); each is shown from this browser's own verified copy of the message, or said
// to be missing. "Go to the message" moves focus to it in the conversation.

import { Kind, MAIN } from "../protocol.js";
import { byId, h } from "./dom.js";
import { who } from "./who.js";

export function createPinnedList({ session, messages }) {
  const section = byId("pinned");
  const list = byId("pinned-list");

  function summary(seq) {
    const record = session.log(MAIN).get(seq);
    if (!record) {
      return h("p", { className: "hint", text: "A pinned message that isn't in this browser's history." });
    }
    if (record.hiddenText || record.kind === "removed") {
      return h("p", { className: "hint", text: "A pinned message that has been removed." });
    }
    if (!record.verified || record.kind !== Kind.POST) {
      return h("p", { className: "hint", text: "A pinned message that could not be verified." });
    }
    return h(
      "p",
      { className: "pinned-body" },
      h("span", { className: "msg-author", text: `${who(session, record.key, { capital: true })}: ` }),
      h("span", { text: record.payload.body }),
    );
  }

  function render() {
    const pins = session.groupState?.pinned ?? [];
    section.hidden = pins.length === 0;
    list.replaceChildren(
      ...pins.map((seq) =>
        h(
          "li",
          {},
          summary(seq),
          messages.elementFor(seq)
            ? h("button", {
                type: "button",
                className: "link-button",
                text: "Go to the message",
                on: {
                  click: () => {
                    const el = messages.elementFor(seq);
                    el?.scrollIntoView({ block: "center" });
                    el?.focus();
                  },
                },
              })
            : null,
        ),
      ),
    );
  }

  return { render };
}

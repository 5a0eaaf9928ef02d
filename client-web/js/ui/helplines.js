// The "Get help now" panel: helplines one click away from every screen.
//
// Owns: the toggle button and the #helplines panel. The content is a placeholder from
// config.js until the server provides configured helplines.

import { HELPLINES, HELPLINES_LEAD } from "../config.js";
import { byId, h } from "./dom.js";

export function initHelplines() {
  const toggle = byId("helplines-toggle");
  const panel = byId("helplines");
  const list = byId("helplines-list");
  const close = byId("helplines-close");

  byId("helplines-lead").textContent = HELPLINES_LEAD;
  list.replaceChildren(
    ...HELPLINES.map((line) =>
      h(
        "li",
        {},
        h("strong", { text: line.name }),
        " ",
        h("a", {
          href: `tel:${line.tel}`,
          text: `Call ${line.shown}`,
          attrs: { "aria-label": `Call ${line.name}, ${line.shown}` },
        }),
      ),
    ),
  );

  const setOpen = (open) => {
    panel.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open) {
      byId("helplines-title").focus();
    }
  };
  toggle.addEventListener("click", () => setOpen(panel.hidden));
  close.addEventListener("click", () => {
    setOpen(false);
    toggle.focus();
  });
  panel.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      setOpen(false);
      toggle.focus();
    }
  });
}

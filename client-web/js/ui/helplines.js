// The "Get help now" panel: helplines one click away from every screen.
//
// Owns: the toggle button and the #helplines panel, and how a list of helplines
// looks wherever it is shown. The content is a placeholder from config.js until the
// server provides configured helplines.

import { HELPLINES, HELPLINES_LEAD } from "../config.js";
import { byId, h } from "./dom.js";

/**
 * Fills a lead paragraph and a list with the helplines. Used by the header panel and
 * by the screens that show them in place (waiting room, dismissed, private help).
 */
export function renderHelplines(leadEl, listEl) {
  leadEl.textContent = HELPLINES_LEAD;
  listEl.replaceChildren(
    ...HELPLINES.map((line) =>
      h(
        "li",
        {},
        h("strong", { text: line.name }),
        " ",
        h("a", {
          href: `tel:${line.tel}`,
          text: `Call ${line.shown}`,
          // The visible words come first in the name (WCAG 2.5.3, label in name).
          attrs: { "aria-label": `Call ${line.shown}, ${line.name}` },
        }),
      ),
    ),
  );
}

export function initHelplines() {
  const toggle = byId("helplines-toggle");
  const panel = byId("helplines");
  const close = byId("helplines-close");

  renderHelplines(byId("helplines-lead"), byId("helplines-list"));

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

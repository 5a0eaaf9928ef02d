// The "Get help now" panel: helplines one click away from every screen.
//
// Owns: the toggle button and the #helplines panel, and how a list of helplines
// looks wherever it is shown. The list is the hub's (signposting.js): every place
// that shows helplines registers its elements once and is redrawn whenever the hub
// sends a new list, so no screen keeps showing the placeholder after the hub spoke.

import { dialable, leadSentence, readHelplines, whereSentence } from "../signposting.js";
import { byId, h } from "./dom.js";

let signposting = null;
// Places that follow the hub's list: [{ leadEl, listEl }].
const targets = [];

/** One helpline as list items: its name, how to reach it, when and where it answers. */
export function helplineItems(helplines) {
  return helplines.map((line) => {
    const number = dialable(line.contact);
    const contact = number
      ? h("a", {
          href: `tel:${number}`,
          text: `Call ${line.contact}`,
          // The visible words come first in the name (WCAG 2.5.3, label in name).
          attrs: { "aria-label": `Call ${line.contact}, ${line.name}` },
        })
      : h("span", { className: "helpline-contact", text: line.contact });
    const when = [line.hours, line.nation].filter(Boolean).join(", ");
    return h(
      "li",
      { className: line.emergency ? "helpline helpline-emergency" : "helpline" },
      h("strong", { text: line.name }),
      " ",
      contact,
      when ? h("span", { className: "helpline-when", text: ` (${when})` }) : null,
    );
  });
}

/**
 * Takes the helplines a frame carried (`flagged`, `support_notice`): they become the
 * list shown everywhere. Returns them cleaned (or the current list if unusable).
 */
export function helplinesFrom(list) {
  signposting?.update(list);
  return readHelplines(list) ?? signposting?.helplines ?? [];
}

/** The hub's helplines now. */
export function currentHelplines() {
  return signposting?.helplines ?? [];
}

/**
 * Fills a lead paragraph and a list with `helplines` (a list from a frame), or — when
 * none is given — with the hub's current list, kept up to date from then on.
 */
export function renderHelplines(leadEl, listEl, helplines = null) {
  if (!helplines) {
    if (!targets.some((t) => t.listEl === listEl)) {
      targets.push({ leadEl, listEl });
    }
    helplines = signposting?.helplines ?? [];
  }
  if (leadEl) {
    leadEl.textContent = helplines.length ? leadSentence(helplines) : "";
  }
  listEl.replaceChildren(...helplineItems(helplines));
}

function redrawAll() {
  for (const { leadEl, listEl } of targets) {
    renderHelplines(leadEl, listEl, signposting.helplines);
  }
  byId("helplines-where").textContent = whereSentence(signposting.helplines);
}

export function initHelplines(source) {
  signposting = source;
  const toggle = byId("helplines-toggle");
  const panel = byId("helplines");
  const close = byId("helplines-close");

  renderHelplines(byId("helplines-lead"), byId("helplines-list"));
  redrawAll();
  source.addEventListener("change", redrawAll);

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
  return { open: () => setOpen(true) };
}

// The helplines sheet ("Helplines: get help now"): the one list of helplines, one tap away from every screen
// (the top bar's "Helplines", and every "Helplines" button with class
// `open-helplines`), with the "Cover your tracks" note at its end.
//
// Owns: the toggle buttons and the #helplines sheet, and how a list of helplines
// looks wherever it is shown (a number is a tel: link, "text WORD to 85258" an sms:
// link). The list is the hub's (signposting.js): every place
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
    const sms = textable(line.contact);
    const contact = number
      ? h("a", {
          className: "helpline-link",
          href: `tel:${number}`,
          text: `Call ${line.contact}`,
          // The visible words come first in the name (WCAG 2.5.3, label in name).
          attrs: { "aria-label": `Call ${line.contact}, ${line.name}` },
        })
      : sms
        ? h("a", {
            className: "helpline-link",
            href: `sms:${sms.number}?body=${encodeURIComponent(sms.word)}`,
            text: line.contact.charAt(0).toUpperCase() + line.contact.slice(1),
            attrs: { "aria-label": `${line.contact.charAt(0).toUpperCase() + line.contact.slice(1)}, ${line.name}` },
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

/** "text SHOUT to 85258" → { word: "SHOUT", number: "85258" }, or null. */
export function textable(contact) {
  const m = /^text\s+(\S+)\s+to\s+(\+?[0-9][0-9 ]{1,20})$/i.exec(String(contact).trim());
  return m ? { word: m[1], number: m[2].replace(/\s/g, "") } : null;
}

let openSheet = null;

/** Opens the helplines sheet (at the "Cover your tracks" note with `tracks`). */
export function openHelplines({ tracks = false } = {}) {
  openSheet?.(tracks);
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
    if (!targets.some((t) => (listEl ? t.listEl === listEl : t.leadEl === leadEl))) {
      targets.push({ leadEl, listEl });
    }
    helplines = signposting?.helplines ?? [];
  }
  if (leadEl) {
    leadEl.textContent = helplines.length ? leadSentence(helplines) : "";
  }
  listEl?.replaceChildren(...helplineItems(helplines));
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

  let opener = null;
  const setOpen = (open, { tracks = false } = {}) => {
    if (open && panel.hidden) {
      opener = document.activeElement;
    }
    panel.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    document.body.classList.toggle("sheet-open", open);
    if (open) {
      byId(tracks ? "tracks-title" : "helplines-title").focus();
      if (tracks) {
        byId("tracks-title").scrollIntoView({ block: "start" });
      } else {
        panel.scrollTop = 0;
      }
    }
  };
  openSheet = (tracks) => setOpen(true, { tracks });
  toggle.addEventListener("click", () => setOpen(panel.hidden));
  byId("tracks-toggle").addEventListener("click", () => setOpen(true, { tracks: true }));
  document.addEventListener("click", (ev) => {
    if (ev.target instanceof Element && ev.target.closest(".open-helplines")) {
      setOpen(true);
    }
  });
  const closeAndReturn = () => {
    setOpen(false);
    (opener?.isConnected && !opener.closest("[hidden]") ? opener : toggle).focus();
    opener = null;
  };
  close.addEventListener("click", closeAndReturn);
  panel.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      closeAndReturn();
    }
  });
  return { open: () => setOpen(true) };
}

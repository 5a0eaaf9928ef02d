// A guarded action: a button that asks first, in a confirm box saying what will
// happen, with "Cancel" focused. Used wherever one click would do something hard to
// undo (a facilitator's remove and hand over, an admin taking a group away).
//
// Owns: nothing of its own in index.html; each box is made beside its button.

import { h } from "./dom.js";

/**
 * A confirm box for `button`: clicking it shows `question()` with "yes" and "no";
 * "yes" runs `onYes`. Returns the box (to place after the button's row).
 */
export function guard(button, { question, yes, onYes }) {
  const text = h("p", {});
  const yesButton = h("button", { type: "button", className: "danger", text: yes });
  const noButton = h("button", { type: "button", className: "secondary", text: "Cancel" });
  const box = h("div", { className: "confirm", hidden: true, attrs: { role: "group" } }, text, h("div", { className: "button-row" }, yesButton, noButton));
  button.setAttribute("aria-expanded", "false");
  button.addEventListener("click", () => {
    text.textContent = question();
    box.hidden = false;
    button.setAttribute("aria-expanded", "true");
    noButton.focus();
  });
  const hide = () => {
    box.hidden = true;
    button.setAttribute("aria-expanded", "false");
  };
  noButton.addEventListener("click", () => {
    hide();
    button.focus();
  });
  yesButton.addEventListener("click", () => {
    hide();
    onYes();
  });
  return box;
}

// "You're invited to work here as staff": the name colleagues will know the redeemer
// by, asked before a staff invite is redeemed (issue 15: the admin's staff list and
// the rota show names, not keys).
//
// Owns: #staff-name. The link says whether an invite is for staff (links.js `staff`);
// that is only a hint for asking, as the server decides the role and ignores a name
// on a member invite. The name is checked the way the server checks it (names.js) and
// signed in its normalised form in the `redeem` payload. The last name given is kept
// on this device ("staffName" in store.js) to fill the field next time; forgetting the
// device removes it with everything else.

import { normaliseDisplayName } from "../names.js";
import { byId, setFieldError } from "./dom.js";

const STORE_KEY = "staffName";

/**
 * `onName(name)` redeems with the chosen name; `onLater()` drops the invite unused.
 * Returns { ask(), hide() }.
 */
export function createStaffNameForm({ store, onName, onLater }) {
  const card = byId("staff-name");
  const form = byId("staff-name-form");
  const input = byId("staff-name-input");
  const error = byId("staff-name-error");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const checked = normaliseDisplayName(input.value);
    if (!checked.ok) {
      setFieldError(input, error, checked.reason);
      input.focus();
      return;
    }
    setFieldError(input, error, null);
    input.value = checked.name;
    try {
      await store.put(STORE_KEY, checked.name);
    } catch {
      // Remembering is a convenience; the invite still goes ahead.
    }
    card.hidden = true;
    onName(checked.name);
  });
  byId("staff-name-later").addEventListener("click", () => {
    card.hidden = true;
    setFieldError(input, error, null);
    onLater();
  });

  return {
    /** Shows the card (filled with the name given last time) and moves focus to it. */
    async ask() {
      if (!card.hidden) {
        return;
      }
      let known = "";
      try {
        const kept = await store.get(STORE_KEY);
        known = typeof kept === "string" ? kept : "";
      } catch {
        // Nothing kept: an empty field.
      }
      if (!input.value) {
        input.value = known;
      }
      card.hidden = false;
      byId("staff-name-title").focus();
    },
    /** Shows a refusal of the name from the server, keeping the card open. */
    refuse(sentence) {
      card.hidden = false;
      setFieldError(input, error, sentence);
      input.focus();
    },
    hide() {
      card.hidden = true;
    },
  };
}

// The on-call rota, for admins: who is on call when, at which level, and saving it.
//
// Owns: #rota-panel. The rota is read with `rota` and replaced whole with a signed
// `set_rota` (the desk does both). Changes are made to a local list first and saved
// together, so a half-made rota never goes live; what is not saved yet is said
// plainly. Times are entered and shown in the admin's local time. Supervisors are
// picked by name from the hub's staff list (`staff`); pasting a key stays possible
// under "Advanced".

import { fingerprint } from "../encoding.js";
import { decodeStrictKey } from "../ed25519-strict.js";
import { ROTA_DEFAULT_HOURS } from "../config.js";
import { sentenceFor } from "../errors.js";
import { MAX_ROTA_ENTRIES } from "../protocol.js";
import { staffLabel } from "../staff-list.js";
import { formatDateTime } from "../time-words.js";
import { byId, h, setFieldError } from "./dom.js";
import { runWithStatus } from "./feedback.js";

/** "YYYY-MM-DDTHH:MM" in local time, as a datetime-local input holds it. */
function localInputValue(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function createRotaEditor({ desk, connection, identity, staffList }) {
  const panel = byId("rota-panel");
  const list = byId("rota-list");
  const empty = byId("rota-empty");
  const now = byId("rota-now");
  const form = byId("rota-form");
  const keyInput = byId("rota-key");
  const pick = byId("rota-pick");
  let staff = new Map(); // key → name (or null), from the last `staff` answer
  const keyError = byId("rota-key-error");
  const start = byId("rota-start");
  const end = byId("rota-end");
  const timeError = byId("rota-time-error");
  const level = byId("rota-level");
  const unsaved = byId("rota-unsaved");
  const save = byId("rota-save");
  const reload = byId("rota-reload");
  const result = byId("rota-result");
  let draft = null; // entries being edited, or null when showing the saved rota
  let visible = false;

  const entries = () => draft ?? desk.rota ?? [];

  /** A supervisor in words: their name, or "Unnamed supervisor (key …)". */
  function named(key) {
    return staffLabel({ key, name: staff.get(key) ?? null }, "Unnamed supervisor");
  }

  async function loadStaff() {
    try {
      const list = (await staffList.load()).staff;
      staff = new Map(list.map((s) => [s.key, s.name]));
      const supervisors = list.filter((s) => s.roles.includes("supervisor"));
      const chosen = pick.value;
      pick.replaceChildren(
        ...supervisors.map((s) =>
          h("option", { value: s.key, text: `${named(s.key)}${s.key === identity.publicKey ? " (you)" : ""}`, selected: s.key === chosen }),
        ),
      );
      if (supervisors.length === 0) {
        pick.append(h("option", { value: "", text: "No supervisor has redeemed an invite yet" }));
      }
      render();
    } catch {
      // The list is a convenience: pasting a key under "Advanced" still works.
    }
  }

  function resetTimes() {
    const minute = 60_000;
    const t = Math.floor(Date.now() / minute) * minute;
    start.value = localInputValue(t);
    end.value = localInputValue(t + ROTA_DEFAULT_HOURS * 60 * minute);
  }

  function render() {
    const rows = entries();
    const t = Date.now();
    list.replaceChildren(
      ...rows.map((e, i) => {
        const current = e.start_ms <= t && t < e.end_ms;
        const remove = h("button", {
          type: "button",
          className: "link-button",
          text: "Remove",
          attrs: { "aria-label": `Remove level ${e.level}, ${named(e.supervisor)}, from ${formatDateTime(e.start_ms)}` },
          on: {
            click: () => {
              draft = entries().filter((_, j) => j !== i);
              render();
              save.focus();
            },
          },
        });
        return h(
          "li",
          { className: current ? "rota-entry is-current" : "rota-entry" },
          h("strong", { text: `Level ${e.level}` }),
          " ",
          h("span", { text: named(e.supervisor), attrs: { title: `Key ${fingerprint(e.supervisor)}` } }),
          e.supervisor === identity.publicKey ? " (you)" : "",
          ` from ${formatDateTime(e.start_ms)} until ${formatDateTime(e.end_ms)}`,
          current ? h("span", { className: "badge badge-oncall", text: "on call now" }) : null,
          " ",
          remove,
        );
      }),
    );
    empty.hidden = rows.length > 0;
    unsaved.hidden = draft === null;
    const onCall = rows.filter((e) => e.start_ms <= t && t < e.end_ms);
    now.textContent = desk.rota === null ? "Reading the rota…" : onCall.length ? `On call now: ${onCall.length} window${onCall.length === 1 ? "" : "s"}.` : "Nobody is on call now.";
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = keyInput.value.trim() || pick.value;
    const keyOk = decodeStrictKey(key) !== null;
    setFieldError(keyInput, keyError, keyOk ? "" : sentenceFor("invalid_key"));
    const from = new Date(start.value).getTime();
    const until = new Date(end.value).getTime();
    const timesOk = Number.isFinite(from) && Number.isFinite(until) && from >= 0 && from < until;
    timeError.textContent = timesOk ? "" : sentenceFor("invalid_window");
    timeError.hidden = timesOk;
    for (const input of [start, end]) {
      if (timesOk) {
        input.removeAttribute("aria-invalid");
      } else {
        input.setAttribute("aria-invalid", "true");
      }
    }
    if (!keyOk || !timesOk) {
      (keyOk ? start : keyInput).focus();
      return;
    }
    if (entries().length >= MAX_ROTA_ENTRIES) {
      result.textContent = sentenceFor("too_many_rota_entries");
      return;
    }
    draft = [...entries(), { supervisor: key, start_ms: from, end_ms: until, level: Number(level.value) === 2 ? 2 : 1 }];
    keyInput.value = "";
    setFieldError(keyInput, keyError, "");
    result.textContent = "Added to the list. Save the rota to put it in force.";
    render();
  });

  save.addEventListener("click", async () => {
    const ok = await runWithStatus(save, result, () => desk.setRota(entries()), "The rota is saved and in force.");
    if (ok) {
      draft = null;
      render();
    }
  });
  reload.addEventListener("click", async () => {
    draft = null;
    result.textContent = "";
    await desk.loadRota();
    await loadStaff();
    render();
  });
  desk.addEventListener("rota", render);
  resetTimes();

  return {
    /** Shown to admins only; reads the rota when first shown. */
    setVisible(show) {
      panel.hidden = !show;
      if (show && !visible && connection.authenticated) {
        desk.loadRota();
        loadStaff();
      }
      visible = show;
      render();
    },
  };
}

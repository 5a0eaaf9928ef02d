// "Staff and the groups they run", for admins: who holds a role, by name, and the
// groups each facilitator runs; letting someone facilitate a group, and taking a
// group away (guarded: it sends them out of that group's console at once).
//
// Owns: #team-panel. The list is the hub's `staff` answer (PROTOCOL.md §6.24, with
// each facilitator's `groups`); a change is one signed `grant` (§6.25), after which
// the list is read again, so what is shown is what the hub holds. Names are the ones
// people gave at their staff invite; keys only as a short tag for the unnamed.

import { sentenceFor } from "../errors.js";
import { grantPayload, isValidGroupId, Kind } from "../protocol.js";
import { staffLabel } from "../staff-list.js";
import { byId, h, roleLabel, setFieldError } from "./dom.js";
import { errorSentence, runWithStatus } from "./feedback.js";
import { guard } from "./guard.js";

export function createTeamPanel({ connection, identity, staffList }) {
  const panel = byId("team-panel");
  const list = byId("team-list");
  const empty = byId("team-empty");
  const more = byId("team-more");
  const form = byId("team-grant-form");
  const person = byId("team-person");
  const groupInput = byId("team-group");
  const groupError = byId("team-group-error");
  const result = byId("team-result");
  let visible = false;
  let staff = [];

  const nameOf = (s) => staffLabel(s);
  const you = (s) => (s.key === identity.publicKey ? " (you)" : "");

  function grant(key, group, revoke) {
    return connection.signedRequest("grant", Kind.GRANT, (counter, ts) => grantPayload(key, group, revoke, counter, ts));
  }

  function item(s) {
    const { roles, groups } = s;
    const li = h("li", { className: "team-person" });
    li.append(
      h("p", {}, h("strong", { text: `${nameOf(s)}${you(s)}` }), ` — ${roles.map(roleLabel).join(", ")}`),
    );
    if (roles.includes("facilitator")) {
      if (groups.length === 0) {
        li.append(h("p", { className: "hint", text: "Runs no group yet." }));
      }
      const rows = h("ul", { className: "plain-list team-groups" });
      for (const group of groups) {
        const takeAway = h("button", { type: "button", className: "secondary", text: `Stop them running ${group}` });
        const status = h("p", { className: "hint", attrs: { role: "status" } });
        const box = guard(takeAway, {
          question: () =>
            `${nameOf(s)} will no longer run ${group}. If they are in it now, they are sent out of it at once, and can come back only as a participant.`,
          yes: `Yes, take ${group} away`,
          onYes: async () => {
            const ok = await runWithStatus(takeAway, status, () => grant(s.key, group, true), `${nameOf(s)} no longer runs ${group}.`);
            if (ok) {
              result.textContent = `${nameOf(s)} no longer runs ${group}.`;
              await load();
            }
          },
        });
        rows.append(h("li", {}, h("span", { className: "team-group", text: group }), " ", takeAway, box, status));
      }
      li.append(rows);
    }
    return li;
  }

  function render() {
    list.replaceChildren(...staff.map(item));
    empty.hidden = staff.length > 0;
    const chosen = person.value;
    person.replaceChildren(
      ...staff.map((s) => h("option", { value: s.key, text: `${nameOf(s)}${you(s)}`, selected: s.key === chosen })),
    );
    if (staff.length === 0) {
      person.append(h("option", { value: "", text: "Nobody holds a role yet" }));
    }
  }

  async function load() {
    try {
      const reply = await staffList.load();
      staff = reply.staff;
      more.hidden = !reply.more;
      render();
    } catch (err) {
      result.textContent = errorSentence(err);
    }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const group = groupInput.value.trim().toLowerCase();
    const key = person.value;
    if (!isValidGroupId(group)) {
      setFieldError(groupInput, groupError, sentenceFor("invalid_group_id"));
      groupInput.focus();
      return;
    }
    setFieldError(groupInput, groupError, "");
    if (!key) {
      result.textContent = "Choose a person first.";
      return;
    }
    const who = staff.find((s) => s.key === key);
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    result.textContent = "Sending…";
    try {
      await grant(key, group, false);
      result.textContent = who ? `${nameOf(who)} now runs ${group}.` : `They now run ${group}.`;
      groupInput.value = "";
      await load();
    } catch (err) {
      if (err.code === "not_found") {
        setFieldError(groupInput, groupError, `There is no group ${group} on this hub.`);
        groupInput.focus();
        result.textContent = "";
      } else {
        result.textContent = errorSentence(err);
      }
    } finally {
      submit.disabled = false;
    }
  });
  byId("team-reload").addEventListener("click", () => {
    result.textContent = "";
    load();
  });

  return {
    /** Shown to admins only; reads the list when first shown. */
    setVisible(show) {
      panel.hidden = !show;
      if (show && !visible && connection.authenticated) {
        load();
      }
      visible = show;
    },
  };
}

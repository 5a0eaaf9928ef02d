// Who is in the group: names, online state, role badges, whether the name is verified.
//
// Owns: the members <ul> and its count. Online state is said in words as well as
// shown by a dot. A name whose signed join does not verify is shown in quotes with a
// plain "name not verified" warning, never as a trusted name.

import { fingerprint, shortTag } from "../encoding.js";
import { h, roleLabel } from "./dom.js";
import { unverifiedReason } from "./verification.js";

const ROLE_ORDER = { facilitator: 0, supervisor: 1, admin: 2 };

function rank(member) {
  const roleRank = Math.min(3, ...member.roles.map((r) => ROLE_ORDER[r] ?? 3));
  return [member.online ? 0 : 1, roleRank];
}

function compare(a, b) {
  const [ra, rb] = [rank(a), rank(b)];
  return ra[0] - rb[0] || ra[1] - rb[1] || a.name.localeCompare(b.name);
}

export function createMemberList(listEl, countEl, onlineCountEl) {
  const members = new Map();

  function renderMember(m) {
    const nameEl = m.verified
      ? h("span", { className: "member-name", text: m.name })
      : h("span", { className: "member-name member-name-unverified", text: `“${m.name}”` });
    return h(
      "li",
      { className: `member${m.online ? " is-online" : ""}` },
      h("span", { className: "presence-dot", attrs: { "aria-hidden": "true" } }),
      h(
        "span",
        { className: "member-main" },
        nameEl,
        m.self ? h("span", { className: "member-you", text: " (you)" }) : null,
        " ",
        h("span", {
          className: "tag",
          text: shortTag(m.key),
          attrs: { title: `Key ${fingerprint(m.key)}`, "aria-label": `key ${fingerprint(m.key, 4)}` },
        }),
        ...m.roles.map((role) => [" ", h("span", { className: `badge badge-${role}`, text: roleLabel(role) })]),
      ),
      h("span", { className: "member-state", text: m.online ? "online" : "offline" }),
      m.verified
        ? null
        : h(
            "span",
            { className: "member-warning", attrs: { title: unverifiedReason(m.reason) } },
            h("span", { attrs: { "aria-hidden": "true" }, text: "⚠ " }),
            "name not verified",
          ),
    );
  }

  function render() {
    const sorted = [...members.values()].sort(compare);
    listEl.replaceChildren(...sorted.map(renderMember));
    countEl.textContent = String(sorted.length);
    onlineCountEl.textContent = String(sorted.filter((m) => m.online).length);
  }

  return {
    setAll(records) {
      members.clear();
      for (const record of records) {
        members.set(record.key, record);
      }
      render();
    },
    upsert(record) {
      members.set(record.key, record);
      render();
    },
    clear() {
      members.clear();
      render();
    },
  };
}

// Who is in the group: names, online state, role badges, whether the name is verified,
// and quiet states (stepped out, muted, lead facilitator).
//
// Owns: the members <ul> and its count. Online state is said in words as well as
// shown by a dot. A name whose signed join does not verify is shown in quotes with a
// plain warning ("we couldn't check this name"), never as a trusted name. No keys.
//
// Items are kept per key and updated in place, so a facilitator's open actions panel
// (member-actions.js, passed in as `actionsFor`) keeps its typing and focus when
// someone else's presence changes.

import { h, roleLabel } from "./dom.js";
import { unverifiedReason } from "./verification.js";

const ROLE_ORDER = { facilitator: 0, supervisor: 1, admin: 2 };

function rank(member) {
  const roles = member.facilitator ? ["facilitator", ...member.roles] : member.roles;
  const roleRank = Math.min(3, ...roles.map((r) => ROLE_ORDER[r] ?? 3));
  return [member.online ? 0 : 1, roleRank];
}

function compare(a, b) {
  const [ra, rb] = [rank(a), rank(b)];
  return ra[0] - rb[0] || ra[1] - rb[1] || a.name.localeCompare(b.name);
}

/**
 * `include(member)`: whether the member belongs in this list (the waiting room is
 * listed apart). `describe(member)`: extra state words ("lead", "muted"). `actionsFor`:
 * an element of controls for a member, or null.
 */
export function createMemberList(listEl, countEl, onlineCountEl, { include = () => true, describe = () => [], actionsFor = null } = {}) {
  const members = new Map();
  const items = new Map(); // key -> { li, info, actions }

  function renderInfo(m) {
    const nameEl = m.verified
      ? h("span", { className: "member-name", text: m.name })
      : h("span", { className: "member-name member-name-unverified", text: `“${m.name}”` });
    const roles = new Set(m.roles);
    if (m.facilitator) {
      roles.add("facilitator");
    }
    const states = [m.online ? "online" : "offline", ...describe(m)];
    return [
      h("span", { className: "presence-dot", attrs: { "aria-hidden": "true" } }),
      h(
        "span",
        { className: "member-main" },
        nameEl,
        m.self ? h("span", { className: "member-you", text: " (you)" }) : null,
        ...[...roles].map((role) => [" ", h("span", { className: `badge badge-${role}`, text: roleLabel(role) })]),
      ),
      h("span", { className: "member-state", text: states.join(", ") }),
      m.verified
        ? null
        : h(
            "span",
            { className: "member-warning", attrs: { title: unverifiedReason(m.reason) } },
            h("span", { attrs: { "aria-hidden": "true" }, text: "⚠ " }),
            "we couldn't check this name: don't rely on it",
          ),
    ];
  }

  function itemFor(m) {
    let item = items.get(m.key);
    if (!item) {
      const info = h("div", { className: "member-info" });
      const actions = h("div", { className: "member-actions-slot" });
      item = { li: h("li", { className: "member" }, info, actions), info, actions };
      items.set(m.key, item);
    }
    item.li.classList.toggle("is-online", m.online);
    item.info.replaceChildren(...renderInfo(m).filter(Boolean));
    const actions = actionsFor ? actionsFor(m) : null;
    if (!actions) {
      item.actions.replaceChildren();
    } else if (actions.parentNode !== item.actions) {
      item.actions.replaceChildren(actions);
    }
    return item.li;
  }

  function render() {
    const sorted = [...members.values()].filter(include).sort(compare);
    const wanted = sorted.map(itemFor);
    const keep = new Set(wanted);
    for (const [key, item] of items) {
      if (!keep.has(item.li)) {
        item.li.remove();
        items.delete(key);
      }
    }
    // Move only what is out of place, so a focused control inside an item that
    // stays put keeps its focus.
    wanted.forEach((li, i) => {
      if (listEl.children[i] !== li) {
        listEl.insertBefore(li, listEl.children[i] ?? null);
      }
    });
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
    /** Draws again (a setting that changes what is shown moved). */
    refresh() {
      render();
    },
    clear() {
      members.clear();
      render();
    },
  };
}

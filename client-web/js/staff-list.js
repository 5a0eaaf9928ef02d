// The hub's list of the people who hold a role (the admin's `staff` request,
// PROTOCOL.md §6.24), as three screens read it: the rota editor's supervisor picker,
// "Staff and the groups they run", and the staff app's reach warning.
//
// One reader: each entry is checked once here (a key, the roles the protocol knows,
// a name only if one was given, a facilitator's valid group ids), and screens that
// ask at the same moment — the rota editor and the team panel both read it when an
// admin's start screen opens — share one request.

import { shortTag } from "./encoding.js";
import { isValidGroupId, ROLES } from "./protocol.js";

const KEY = /^[A-Za-z0-9_-]{43}$/;

/** The `staff` reply as `{ staff: [{ key, name, roles, groups }], more }`; entries
 *  without a well-formed key are left out, `name` is null when none was given. */
export function parseStaff(reply) {
  const list = Array.isArray(reply?.staff) ? reply.staff : [];
  const staff = list
    .filter((s) => typeof s?.key === "string" && KEY.test(s.key))
    .map((s) => ({
      key: s.key,
      name: typeof s.name === "string" && s.name ? s.name : null,
      roles: Array.isArray(s.roles) ? s.roles.filter((r) => ROLES.includes(r)) : [],
      groups: Array.isArray(s.groups) ? s.groups.filter(isValidGroupId) : [],
    }));
  return { staff, more: reply?.more === true };
}

/** A person in words: their name, or `unnamed` with a short tag of their key. */
export function staffLabel(entry, unnamed = "Someone unnamed") {
  return entry.name ?? `${unnamed} (key ${shortTag(entry.key)})`;
}

/** A reader of the list over `connection`; `load()` resolves to `parseStaff`'s
 *  answer and rejects as the request does. */
export function createStaffList(connection) {
  let pending = null;
  return {
    load() {
      if (!pending) {
        pending = connection
          .request("staff")
          .then(parseStaff)
          .finally(() => {
            pending = null;
          });
      }
      return pending;
    },
  };
}

// What the address bar's fragment carries, and keeping it tidy.
//
//   #invite=<token>           redeem an invite after logging in
//   #group=<id>               go to the join screen of that group
//   #invite=<token>&group=<id> both (the facilitator link)
//   …&staff=1                 a staff invite: the app asks the name colleagues will
//                             know the redeemer by before redeeming (a hint only: the
//                             server decides the role, and ignores a name for others)
//
// Owns: reading and rewriting the fragment. All rewriting uses history.replaceState,
// never location.hash assignment, so moving between screens adds no history
// entries: after "Quick exit" replaces this entry, Back cannot return to a group.

/** Reads { invite, group } from a fragment such as "#invite=abc&group=demo". */
export function readLink(hash = globalThis.location.hash) {
  const params = new URLSearchParams(String(hash).replace(/^#/, ""));
  const invite = params.get("invite");
  const group = params.get("group");
  const escalation = Number(params.get("escalation"));
  return {
    invite: invite && invite.length <= 512 ? invite : null,
    group: group || null,
    staff: params.get("staff") === "1",
    // Staff console links (a notification's): #escalation=<id>, #console.
    escalation: Number.isSafeInteger(escalation) && escalation > 0 ? escalation : null,
    console: params.has("console") || params.has("escalation"),
  };
}

/** Rewrites the fragment to carry exactly `link` ({ invite?, group?, staff? }), in place. */
export function writeLink(link) {
  const params = new URLSearchParams();
  if (link.invite) {
    params.set("invite", link.invite);
  }
  if (link.group) {
    params.set("group", link.group);
  }
  if (link.invite && link.staff) {
    params.set("staff", "1");
  }
  const fragment = params.toString();
  const loc = globalThis.location;
  const url = `${loc.pathname}${loc.search}${fragment ? `#${fragment}` : ""}`;
  if (url !== `${loc.pathname}${loc.search}${loc.hash}`) {
    globalThis.history.replaceState(null, "", url);
  }
}

/** Removes the invite token from the address bar, keeping any group. */
export function forgetInvite() {
  const { group } = readLink();
  writeLink({ group });
}

/** A link others can open to reach a group. */
export function groupLink(groupId, loc = globalThis.location) {
  return `${loc.origin}${loc.pathname}#group=${encodeURIComponent(groupId)}`;
}

// Whether this person may write to the group's conversation now, and if not, why.
//
// Mirrors the server's order of refusals for a main-channel post (groups semantics,
// "post"): removed, agreement, waiting room, closed, paused, muted, slow mode. The
// server stays the authority; this only lets the page say so before anything is
// signed, and disable the composer. Private messages to a facilitator are never
// blocked here: they are the help path.
//
// Owns: the rule, as a pure function. No DOM, no timers.

import { MemberStatus } from "./protocol.js";

/** Roles that pass the door and are always in the room (room.rs `is_staff`). */
export function isStaffRole(roles) {
  return roles.some((r) => r === "facilitator" || r === "supervisor" || r === "admin");
}

/**
 * Returns null when a main-channel post may be sent, or { code, untilMs?,
 * nextSessionMs? } where code is an error code of errors.js and untilMs a server time.
 *
 *   status       our MemberStatus
 *   inRoom       whether we are in the conversation
 *   dismissed    whether the server took us out
 *   state        the GroupState
 *   me           our member record (muted_until_ms)
 *   facilitator  whether we have facilitator powers here
 *   now          server time (ms)
 *   slowUntilMs  when slow mode lets our next message through (server time), or null
 */
export function postingBlock({ status, inRoom, dismissed, state, me, facilitator, now, slowUntilMs }) {
  if (dismissed || status === MemberStatus.REMOVED || status === MemberStatus.DECLINED) {
    return { code: "removed" };
  }
  if (status === MemberStatus.NEEDS_AGREEMENT) {
    return { code: "agreement_required" };
  }
  if (!inRoom) {
    return { code: "waiting" };
  }
  if (state && !state.session_open) {
    return { code: "closed", nextSessionMs: state.next_session_ms ?? null };
  }
  if (state?.paused && !facilitator) {
    return { code: "paused" };
  }
  const mutedUntil = me?.mutedUntilMs;
  if (Number.isFinite(mutedUntil) && mutedUntil > now) {
    return { code: "muted", untilMs: mutedUntil };
  }
  if (!facilitator && state?.slow_mode_secs > 0 && Number.isFinite(slowUntilMs) && slowUntilMs > now) {
    return { code: "slow_mode", untilMs: slowUntilMs };
  }
  return null;
}

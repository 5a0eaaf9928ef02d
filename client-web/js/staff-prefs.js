// What the staff console keeps across reloads, in localStorage under one key:
//   "peerhub.staff" -> { alerts: bool (sound and notifications on),
//                        console: bool (the console was the screen open) }
//
// Staff only: nothing is written for a participant, and nothing here names a person,
// a group or a message. A blocked localStorage (some private modes) just forgets.

const KEY = "peerhub.staff";

/** The saved preferences ({} when none or unreadable). */
export function readStaffPrefs() {
  try {
    const value = JSON.parse(globalThis.localStorage?.getItem(KEY) ?? "{}");
    return value && typeof value === "object" ? value : {};
  } catch {
    return {};
  }
}

/** Merges `patch` into the saved preferences. */
export function writeStaffPrefs(patch) {
  try {
    globalThis.localStorage?.setItem(KEY, JSON.stringify({ ...readStaffPrefs(), ...patch }));
  } catch {
    // Storage refused: the console still works, it just forgets on reload.
  }
}

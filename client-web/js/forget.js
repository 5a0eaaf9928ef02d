// "Forget this device": remove everything this site keeps in the browser.
//
// What goes: every IndexedDB database of this origin (keys, group keys, names,
// counters, seen counters), localStorage (staff console preferences, sound, the
// quick-exit choice), sessionStorage, Cache Storage, and every service worker this
// origin registered (which ends its push subscription). What cannot go from here is
// what the hub holds: see docs/OPERATIONS.md "What a key alone can still reach" and
// `peerhub erase`.
//
// Owns: the wipe and the "quick exit forgets too" choice (localStorage, so quick
// exit can read it without waiting). Never decides when to wipe; the start screen and
// quick exit ask.

const EXIT_FORGETS = "peerhub.exitForgets";

/** Whether quick exit should also forget this device. */
export function exitForgets() {
  try {
    return globalThis.localStorage?.getItem(EXIT_FORGETS) === "1";
  } catch {
    return false;
  }
}

/** Saves the quick-exit choice; false when this browser would not keep it. */
export function setExitForgets(on) {
  try {
    if (on) {
      globalThis.localStorage.setItem(EXIT_FORGETS, "1");
    } else {
      globalThis.localStorage.removeItem(EXIT_FORGETS);
    }
    return true;
  } catch {
    return false;
  }
}

function deleteDatabase(name) {
  return new Promise((resolve) => {
    const request = indexedDB.deleteDatabase(name);
    request.onsuccess = () => resolve(true);
    request.onerror = () => resolve(false);
    // Another tab holds it open; it closes on versionchange (store.js) and the
    // deletion then completes by itself.
    request.onblocked = () => {};
  });
}

/**
 * Wipes this origin's browser storage. `store`: the open store, closed first so its
 * database can be deleted. Resolves { ok } — false when something could not be removed
 * (the page then says to clear the site's data in the browser's settings).
 */
export async function forgetDevice(store) {
  let ok = true;
  try {
    store?.close?.();
  } catch {
    // closing is best effort; deletion waits for it
  }
  const tasks = [];
  if (globalThis.indexedDB) {
    tasks.push(
      (async () => {
        const names = indexedDB.databases ? (await indexedDB.databases()).map((d) => d.name) : [];
        if (!names.includes("peerhub")) {
          names.push("peerhub");
        }
        const done = await Promise.all(names.filter(Boolean).map(deleteDatabase));
        ok &&= done.every(Boolean);
      })(),
    );
  }
  try {
    globalThis.localStorage?.clear();
    globalThis.sessionStorage?.clear();
  } catch {
    ok = false;
  }
  if (globalThis.caches) {
    tasks.push(
      caches
        .keys()
        .then((keys) => Promise.all(keys.map((k) => caches.delete(k))))
        .catch(() => {
          ok = false;
        }),
    );
  }
  if (globalThis.navigator?.serviceWorker) {
    tasks.push(
      navigator.serviceWorker
        .getRegistrations()
        .then((regs) => Promise.all(regs.map((r) => r.unregister())))
        .catch(() => {
          ok = false;
        }),
    );
  }
  await Promise.all(tasks);
  return { ok };
}

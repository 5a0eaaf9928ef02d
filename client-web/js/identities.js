// Which key this device uses where: one key per group joined as a participant, and one
// home key for everything else (the start screen, invites, staff work).
//
// Why: a pseudonym protects someone only if nothing on the wire links it to their
// other pseudonyms. One key for every group would let the hub, or anyone it shows a
// member list to, see that "River" in one group is "Sam" in another. So a participant
// gets a fresh key for each new group, and the hub sees unrelated keys.
//
// The rules (PROTOCOL.md "Identity model"):
//   - a group this device has a key for keeps that key (so its history, private
//     check-ins and records stay reachable);
//   - otherwise, if the home key holds a staff role (facilitator, supervisor, admin),
//     the group uses the home key: staff act under the key their invite bound;
//   - otherwise the group gets a new key, made here, never used anywhere else;
//   - an invite is redeemed with the home key while it is staff or still unused (bound
//     to no group); otherwise with a new key. A member invite binds the key that
//     redeemed it to that group; a staff invite makes the new key the home key (the
//     previous one stays with the groups it was used in);
//   - a session-only key (a choice at join) lives in this tab's memory only and is
//     never written anywhere: closing or reloading the tab forgets it;
//   - a passphrase-locked key (a choice at join) is stored only wrapped (keys.js);
//     each page asks for the passphrase once, and keeps the opened key in memory.
//
// Migration: a device from before per-group keys has one key ("identity") and the
// names it used per group ("names"). That key stays the home key (with any staff
// role), and is recorded as the key of every group it has a name for; new groups get
// new keys. Done once, marked by "groupKeys" existing.
//
// Owns: store keys "identity" (the home key, shape unchanged so staff-sw.js can still
// sign with it) and "groupKeys" ({ [group id]: identity record }). Never exports a
// private key.

import { generateIdentity, generateLockedIdentity, unlockIdentity } from "./keys.js";

/** Thrown by keyFor when a group's key is locked and the passphrase is missing or wrong. */
export class PassphraseError extends Error {
  constructor(code) {
    super(code);
    this.code = code;
  }
}

/** Shortest passphrase accepted for a locked key. */
export const MIN_PASSPHRASE_CHARS = 8;

const HOME = "identity";
const GROUP_KEYS = "groupKeys";
const STAFF_ROLES = ["facilitator", "supervisor", "admin"];

export class Identities {
  constructor(store) {
    this.store = store;
    this.home = null; // identity record of the home key
    this.homeRoles = null; // roles of the home key once a login told us, else null
    this.sessionKeys = new Map(); // group id -> identity, this tab only
    this.sessionNames = new Map(); // group id -> the name used with a session-only key
    this.unlocked = new Map(); // group id -> identity opened with its passphrase, this page
  }

  /** Loads (or makes) the home key and migrates a one-key device. Returns the home key. */
  async load(loadOrCreate) {
    this.home = await loadOrCreate(this.store);
    try {
      const keys = await this.store.get(GROUP_KEYS);
      if (keys === undefined) {
        const migrated = {};
        if (!this.home.created) {
          const names = (await this.store.get("names")) ?? {};
          for (const group of Object.keys(names)) {
            migrated[group] = this.homeRecord();
          }
        }
        await this.store.put(GROUP_KEYS, migrated);
      }
    } catch {
      // A store that cannot keep keys forgets them with the tab (store.persistent).
    }
    return this.home;
  }

  homeRecord() {
    return { version: 1, keyPair: this.home.keyPair, publicKey: this.home.publicKey, createdAt: Date.now() };
  }

  isHomeStaff() {
    return Array.isArray(this.homeRoles) && this.homeRoles.some((r) => STAFF_ROLES.includes(r));
  }

  /** The roles a login with the home key reported. */
  observeHomeRoles(roles) {
    this.homeRoles = Array.isArray(roles) ? roles : [];
  }

  async groupKeys() {
    try {
      return (await this.store.get(GROUP_KEYS)) ?? {};
    } catch {
      return {};
    }
  }

  /** The key this device already uses in a group, or null. */
  async existingFor(groupId) {
    if (this.sessionKeys.has(groupId)) {
      return this.sessionKeys.get(groupId);
    }
    if (this.unlocked.has(groupId)) {
      return this.unlocked.get(groupId);
    }
    const saved = (await this.groupKeys())[groupId];
    if (saved?.wrapped && saved.publicKey) {
      return { locked: true, publicKey: saved.publicKey, wrapped: saved.wrapped };
    }
    if (saved?.keyPair?.privateKey && saved.publicKey) {
      return { keyPair: saved.keyPair, publicKey: saved.publicKey, persistent: this.store.persistent };
    }
    return null;
  }

  /**
   * The key to join `groupId` with, made and recorded if new. `sessionOnly`: a new
   * key kept in this tab's memory only.
   */
  async keyFor(groupId, { sessionOnly = false, passphrase = "" } = {}) {
    const existing = await this.existingFor(groupId);
    if (existing?.locked) {
      if (!passphrase) {
        throw new PassphraseError("passphrase_needed");
      }
      const opened = await unlockIdentity(existing.publicKey, existing.wrapped, passphrase);
      if (!opened) {
        throw new PassphraseError("passphrase_wrong");
      }
      const identity = { ...opened, persistent: this.store.persistent };
      this.unlocked.set(groupId, identity);
      return identity;
    }
    if (existing) {
      return existing;
    }
    if (passphrase && !sessionOnly && !this.isHomeStaff()) {
      if ([...passphrase].length < MIN_PASSPHRASE_CHARS) {
        throw new PassphraseError("passphrase_short");
      }
      const { identity, wrapped } = await generateLockedIdentity(passphrase);
      await this.bind(groupId, { version: 2, publicKey: identity.publicKey, wrapped, createdAt: Date.now() });
      const usable = { ...identity, persistent: this.store.persistent };
      this.unlocked.set(groupId, usable);
      return usable;
    }
    if (this.isHomeStaff()) {
      await this.bind(groupId, this.homeRecord());
      return this.home;
    }
    const fresh = await generateIdentity();
    if (sessionOnly) {
      const identity = { ...fresh, persistent: false };
      this.sessionKeys.set(groupId, identity);
      return identity;
    }
    await this.bind(groupId, { version: 1, keyPair: fresh.keyPair, publicKey: fresh.publicKey, createdAt: Date.now() });
    return { ...fresh, persistent: this.store.persistent };
  }

  /** The name used with a session-only key (kept in memory like the key). */
  rememberSessionName(groupId, name) {
    if (this.sessionKeys.has(groupId)) {
      this.sessionNames.set(groupId, name);
    }
  }

  /** Whether the group's key on this device is locked and not yet opened on this page. */
  async isLocked(groupId) {
    return (await this.existingFor(groupId))?.locked === true;
  }

  /** Whether the group's key on this device is a session-only one. */
  isSessionOnly(groupId) {
    return this.sessionKeys.has(groupId);
  }

  async bind(groupId, record) {
    try {
      await this.store.update(GROUP_KEYS, (keys) => ({ ...(keys ?? {}), [groupId]: record }));
    } catch {
      // Not kept: the next visit gets a new key for this group.
    }
  }

  /** Whether the home key is bound to no group (so redeeming with it links nothing). */
  async homeUnused() {
    const keys = await this.groupKeys();
    return !Object.values(keys).some((r) => r?.publicKey === this.home.publicKey);
  }

  /** The key to redeem an invite with: the home key if staff or unused, else a new one. */
  async keyForInvite() {
    if (this.isHomeStaff() || (await this.homeUnused())) {
      return { identity: this.home, fresh: false };
    }
    return { identity: { ...(await generateIdentity()), persistent: this.store.persistent }, fresh: true };
  }

  /** An invite redeemed with `identity` gave `reply` ({ role, group }); keep what it bound. */
  async afterRedeem(identity, reply) {
    if (reply.role === "member" && typeof reply.group === "string") {
      await this.bind(reply.group, { version: 1, keyPair: identity.keyPair, publicKey: identity.publicKey, createdAt: Date.now() });
      return;
    }
    if (identity.publicKey !== this.home.publicKey) {
      // A staff role on a new key: it becomes the home key. The old one stays with
      // the groups it was used in (groupKeys holds its key pair).
      const record = { version: 1, keyPair: identity.keyPair, publicKey: identity.publicKey, createdAt: Date.now() };
      try {
        await this.store.put(HOME, record);
      } catch {
        // kept for this tab only
      }
      this.home = { ...identity, persistent: this.store.persistent, created: false };
      this.homeRoles = Array.isArray(reply.roles) ? reply.roles : [reply.role];
    }
  }

  /** Every group this device has a key for, with the name used there: [{ group, name, sessionOnly }]. */
  async groups(names) {
    const keys = await this.groupKeys();
    const remembered = names ? await names.all() : {};
    const ids = new Set([...Object.keys(keys), ...Object.keys(remembered), ...this.sessionKeys.keys()]);
    return [...ids].sort().map((group) => ({
      group,
      name: this.sessionNames.get(group) ?? (typeof remembered[group] === "string" ? remembered[group] : ""),
      sessionOnly: this.sessionKeys.has(group),
    }));
  }

  /** Drops everything held in memory (after "Forget this device"). */
  forgetMemory() {
    this.sessionKeys.clear();
    this.sessionNames.clear();
    this.unlocked.clear();
    this.home = null;
    this.homeRoles = null;
  }
}

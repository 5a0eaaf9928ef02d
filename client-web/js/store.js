// Local storage for what must survive a reload: the key pair and the last counter.
//
// Owns: the IndexedDB database "peerhub" (one object store, "kv", with explicit keys).
// Keys kept here:
//   "identity" -> { version, keyPair: CryptoKeyPair, publicKey: base64url, createdAt }
//                 The private CryptoKey is non-extractable; IndexedDB stores it by
//                 structured clone, so its bytes never reach JavaScript.
//   "counter"  -> number, the last counter this browser signed (any tab).
//   "groupKeys"-> { [group id]: identity record }, the key used in each group
//                 (identities.js: one key per group, so nothing links them).
//   "seen"     -> { [group id]: { [channel + " " + key]: [seq, counter, used] } }, the
//                 highest counter seen from each sender (seen-counters.js), bounded.
//   "names"    -> { [group id]: pseudonym }, the name last used in each group, so a
//                 person coming back need not retype it ("About this device" empties
//                 it; a memory-only store forgets it with the tab).
//   "staffName"-> string, the name last given for colleagues at a staff invite
//                 (ui/staff-name-form.js), offered at the next one.
//
// Never stores messages: a person using a shared device should leave as little
// behind as possible.
//
// When IndexedDB is unavailable (some private-browsing modes), a memory-only store is
// used instead and `persistent` is false, so the interface can tell the person that
// their key will be forgotten.

const DB_NAME = "peerhub";
const DB_VERSION = 1;
const KV = "kv";

function promisify(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

class IndexedDbStore {
  constructor(db) {
    this.db = db;
    this.persistent = true;
  }

  async get(key) {
    const tx = this.db.transaction(KV, "readonly");
    return promisify(tx.objectStore(KV).get(key));
  }

  async put(key, value) {
    const tx = this.db.transaction(KV, "readwrite");
    tx.objectStore(KV).put(value, key);
    await transactionDone(tx);
  }

  /** Closes the database (before "Forget this device" deletes it). */
  close() {
    this.db.close();
  }

  /**
   * Reads, changes and writes one value in a single readwrite transaction. IndexedDB
   * runs readwrite transactions on the same store one at a time, across every tab of
   * this origin, so two tabs can never read the same old value. `change` must be
   * synchronous: awaiting anything inside would let the transaction commit early.
   */
  update(key, change) {
    return new Promise((resolve, reject) => {
      const tx = this.db.transaction(KV, "readwrite");
      const kv = tx.objectStore(KV);
      let next;
      const read = kv.get(key);
      read.onsuccess = () => {
        try {
          next = change(read.result);
          kv.put(next, key);
        } catch (err) {
          tx.abort();
          reject(err);
        }
      };
      tx.oncomplete = () => resolve(next);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
    });
  }
}

function transactionDone(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
  });
}

class MemoryStore {
  constructor() {
    this.map = new Map();
    this.persistent = false;
  }

  async get(key) {
    return this.map.get(key);
  }

  async put(key, value) {
    this.map.set(key, value);
  }

  close() {
    this.map.clear();
  }

  async update(key, change) {
    const next = change(this.map.get(key));
    this.map.set(key, next);
    return next;
  }
}

/** Opens the store, falling back to memory when IndexedDB cannot be used. */
export async function openStore() {
  if (!globalThis.indexedDB) {
    return new MemoryStore();
  }
  try {
    const db = await new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, DB_VERSION);
      request.onupgradeneeded = () => {
        if (!request.result.objectStoreNames.contains(KV)) {
          request.result.createObjectStore(KV);
        }
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
      request.onblocked = () => reject(new Error("database upgrade blocked by another tab"));
    });
    // Another tab upgrading the schema later must not be blocked by this one.
    db.onversionchange = () => db.close();
    return new IndexedDbStore(db);
  } catch {
    return new MemoryStore();
  }
}

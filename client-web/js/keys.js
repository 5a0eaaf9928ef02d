// This browser's identity, and checking other people's signatures.
//
// Identity is a key: an Ed25519 key pair made by WebCrypto with a non-extractable
// private half, kept in the store so the same identity survives reloads. The public
// key (32 bytes, unpadded base64url) is the account id.
//
// Owns: key generation, loading, signing with our key, and importing and caching
// other people's public keys for verification. Never exports the private key and
// never decides what is signed (see protocol.js).

import { toBase64Url } from "./encoding.js";
import { decodeStrictKey, decodeStrictSignature } from "./ed25519-strict.js";

const ALGORITHM = { name: "Ed25519" };
const IDENTITY_KEY = "identity";

/** Thrown when the browser cannot do what peerhub needs. */
export class UnsupportedError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function subtle() {
  const s = globalThis.crypto?.subtle;
  if (!s) {
    // WebCrypto exists only in secure contexts (https, or http on loopback).
    throw new UnsupportedError("insecure_context", "crypto.subtle is unavailable");
  }
  return s;
}

/**
 * Loads this browser's identity from the store, creating and saving one if there is
 * none. Returns { keyPair, publicKey, persistent, created }.
 */
export async function loadOrCreateIdentity(store) {
  const saved = await store.get(IDENTITY_KEY).catch(() => undefined);
  if (saved?.version === 1 && saved.keyPair?.privateKey && saved.publicKey) {
    return {
      keyPair: saved.keyPair,
      publicKey: saved.publicKey,
      persistent: store.persistent,
      created: false,
    };
  }
  const { keyPair, publicKey } = await generateIdentity();
  const record = {
    version: 1,
    keyPair,
    publicKey,
    createdAt: Date.now(),
  };
  let persistent = store.persistent;
  try {
    await store.put(IDENTITY_KEY, record);
  } catch {
    persistent = false; // e.g. storage full or cloning CryptoKey refused
  }
  return { keyPair: record.keyPair, publicKey, persistent, created: true };
}

/**
 * Makes a new key pair (non-extractable private half) without storing it. Returns
 * { keyPair, publicKey }. identities.js decides where a key is kept.
 */
export async function generateIdentity() {
  let keyPair;
  try {
    keyPair = await subtle().generateKey(ALGORITHM, false, ["sign", "verify"]);
  } catch (err) {
    if (err instanceof UnsupportedError) {
      throw err;
    }
    throw new UnsupportedError("no_ed25519", `Ed25519 is not available: ${err?.message ?? err}`);
  }
  const raw = await subtle().exportKey("raw", keyPair.publicKey);
  return { keyPair: { publicKey: keyPair.publicKey, privateKey: keyPair.privateKey }, publicKey: toBase64Url(raw) };
}

// A passphrase-locked key: the private half is wrapped (AES-GCM, 256-bit key derived
// from the passphrase with PBKDF2-SHA-256) and only the wrapped bytes are stored. The
// passphrase itself is never stored. Iterations follow OWASP's 2023 advice for
// PBKDF2-HMAC-SHA-256.
const PBKDF2_ITERATIONS = 600_000;

async function passphraseKey(passphrase, salt) {
  const base = await subtle().importKey("raw", new TextEncoder().encode(passphrase), "PBKDF2", false, ["deriveKey"]);
  return subtle().deriveKey(
    { name: "PBKDF2", salt, iterations: PBKDF2_ITERATIONS, hash: "SHA-256" },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    ["wrapKey", "unwrapKey"],
  );
}

/**
 * Makes a new key pair whose private half is stored only wrapped under `passphrase`.
 * Returns { identity: { keyPair, publicKey } (usable now, not extractable), wrapped }.
 * The wrapped form binds the public key (AES-GCM additional data).
 */
export async function generateLockedIdentity(passphrase) {
  const pair = await subtle().generateKey(ALGORITHM, true, ["sign", "verify"]);
  const publicKey = toBase64Url(await subtle().exportKey("raw", pair.publicKey));
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const aes = await passphraseKey(passphrase, salt);
  const aad = new TextEncoder().encode(publicKey);
  const data = await subtle().wrapKey("pkcs8", pair.privateKey, aes, { name: "AES-GCM", iv, additionalData: aad });
  const wrapped = { kdf: "PBKDF2-SHA-256", iterations: PBKDF2_ITERATIONS, salt, iv, data: new Uint8Array(data) };
  // The extractable original is dropped; the key used from now on is not extractable.
  const privateKey = await subtle().unwrapKey("pkcs8", data, aes, { name: "AES-GCM", iv, additionalData: aad }, ALGORITHM, false, ["sign"]);
  return { identity: { keyPair: { publicKey: pair.publicKey, privateKey }, publicKey }, wrapped };
}

/** Opens a wrapped key with `passphrase`; resolves { keyPair, publicKey } or null if wrong. */
export async function unlockIdentity(publicKey, wrapped, passphrase) {
  try {
    const aes = await passphraseKey(passphrase, wrapped.salt);
    const privateKey = await subtle().unwrapKey(
      "pkcs8",
      wrapped.data,
      aes,
      { name: "AES-GCM", iv: wrapped.iv, additionalData: new TextEncoder().encode(publicKey) },
      ALGORITHM,
      false,
      ["sign"],
    );
    return { keyPair: { privateKey }, publicKey };
  } catch {
    return null;
  }
}

/** Signs bytes with our private key; returns the 64-byte signature. */
export async function signBytes(keyPair, bytes) {
  const sig = await subtle().sign(ALGORITHM, keyPair.privateKey, bytes);
  return new Uint8Array(sig);
}

// Imported verification keys by base64url key. Importing is the costly part of a
// check, and a group has few members, so every member's key is imported once. Bounded
// so a stream of keys from a misbehaving server cannot grow memory without end.
const MAX_CACHED_KEYS = 2048;
const importedKeys = new Map();

function importVerifyKey(publicKeyB64) {
  let pending = importedKeys.get(publicKeyB64);
  if (pending) {
    return pending;
  }
  const raw = decodeStrictKey(publicKeyB64);
  pending = raw
    ? subtle().importKey("raw", raw, ALGORITHM, false, ["verify"]).catch(() => null)
    : Promise.resolve(null);
  if (importedKeys.size >= MAX_CACHED_KEYS) {
    importedKeys.delete(importedKeys.keys().next().value);
  }
  importedKeys.set(publicKeyB64, pending);
  return pending;
}

/**
 * Checks an Ed25519 signature (base64url) by a public key (base64url) over bytes.
 * Resolves true or false; never throws for bad input.
 */
export async function verifyBytes(publicKeyB64, sigB64, bytes) {
  const sig = decodeStrictSignature(sigB64);
  if (!sig) {
    return false;
  }
  const key = await importVerifyKey(publicKeyB64);
  if (!key) {
    return false;
  }
  try {
    return await subtle().verify(ALGORITHM, key, sig, bytes);
  } catch {
    return false;
  }
}

// The parts of strict Ed25519 verification that WebCrypto does not promise.
//
// The server verifies with ed25519-dalek's `verify_strict`, which refuses small-order
// public keys, a small-order R and a non-canonical S. The WebCrypto specification asks
// browsers for the same, but implementations have differed, so the client checks these
// cheap byte-level conditions itself before calling `crypto.subtle.verify`. A key that
// is "weak" can produce signatures that verify for many messages, so nothing signed
// by it may be shown as verified.
//
// Owns: pure byte checks. Never imports keys or talks to WebCrypto.

import { fromBase64Url } from "./encoding.js";

// Every encoding (with the sign bit cleared) of the eight points of small order on
// edwards25519, including the non-canonical y + p forms. Computed from the curve
// equation; the same table libsodium uses.
const SMALL_ORDER_ENCODINGS = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

// The order L of the prime-order subgroup, little-endian: S must be below it.
const GROUP_ORDER_LE = hexToBytes(
  "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010",
);

function hexToBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i += 1) {
    out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  }
  return out;
}

function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** True when 32 bytes encode a point of small order (whatever the sign bit). */
export function isSmallOrderEncoding(bytes32) {
  if (bytes32.length !== 32) {
    return true;
  }
  const masked = Uint8Array.from(bytes32);
  masked[31] &= 0x7f;
  return SMALL_ORDER_ENCODINGS.includes(toHex(masked));
}

/** True when the little-endian scalar is below the group order L. */
export function isCanonicalScalar(bytes32) {
  for (let i = 31; i >= 0; i -= 1) {
    if (bytes32[i] < GROUP_ORDER_LE[i]) {
      return true;
    }
    if (bytes32[i] > GROUP_ORDER_LE[i]) {
      return false;
    }
  }
  return false; // equal to L
}

/** Decodes a public key, or null if it is malformed or weak. */
export function decodeStrictKey(publicKeyB64) {
  const key = fromBase64Url(publicKeyB64);
  if (!key || key.length !== 32 || isSmallOrderEncoding(key)) {
    return null;
  }
  return key;
}

/** Decodes a signature, or null unless it is 64 bytes with an acceptable R and S. */
export function decodeStrictSignature(sigB64) {
  const sig = fromBase64Url(sigB64);
  if (!sig || sig.length !== 64) {
    return null;
  }
  if (isSmallOrderEncoding(sig.subarray(0, 32)) || !isCanonicalScalar(sig.subarray(32))) {
    return null;
  }
  return sig;
}

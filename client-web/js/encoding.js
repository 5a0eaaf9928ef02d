// Byte strings as the wire carries them: unpadded base64url (RFC 4648 §5) for keys,
// signatures, challenges and tokens; UTF-8 for everything that is signed.
//
// Owns: conversions only. Must never touch the DOM, storage or the network, so that it
// can be loaded in Node for checks as well as in the browser.

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/** UTF-8 bytes of a string. */
export function utf8(text) {
  return utf8Encoder.encode(text);
}

/** A string from UTF-8 bytes; throws on invalid UTF-8. */
export function fromUtf8(bytes) {
  return utf8Decoder.decode(bytes);
}

/** Unpadded base64url of a byte array (Uint8Array or ArrayBuffer). */
export function toBase64Url(bytes) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let binary = "";
  for (let i = 0; i < view.length; i += 1) {
    binary += String.fromCharCode(view[i]);
  }
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

const BASE64URL = /^[A-Za-z0-9_-]*$/;

/**
 * Bytes from unpadded base64url. Like the server, refuses padding and the standard
 * alphabet's `+` and `/`, so a value means the same thing to every party.
 * Returns null when the text is not valid.
 */
export function fromBase64Url(text) {
  if (typeof text !== "string" || !BASE64URL.test(text) || text.length % 4 === 1) {
    return null;
  }
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  let binary;
  try {
    binary = atob(padded);
  } catch {
    return null;
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) {
    bytes[i] = binary.charCodeAt(i);
  }
  // Refuse non-canonical encodings (stray low bits in the last character), which a
  // strict decoder on the server would also refuse.
  if (toBase64Url(bytes) !== text) {
    return null;
  }
  return bytes;
}

/**
 * A key's fingerprint for people to compare: the first `chars` characters of its
 * base64url form in groups of four, e.g. "k3Fa 9xQ2 Lm0P". It is a label for reading
 * aloud, never an id.
 */
export function fingerprint(publicKeyB64, chars = 12) {
  const head = String(publicKeyB64).slice(0, chars);
  return head.match(/.{1,4}/g)?.join(" ") ?? "";
}

/** A very short tag that tells two people with the same pseudonym apart. */
export function shortTag(publicKeyB64) {
  return String(publicKeyB64).slice(0, 4);
}

/** Length in Unicode scalar values, which is how the server counts characters. */
export function scalarLength(text) {
  let count = 0;
  for (const _ of text) {
    count += 1;
  }
  return count;
}

/**
 * The text with lone UTF-16 surrogates replaced by U+FFFD. JSON.stringify would
 * otherwise write them as "\udXXX" escapes, which the server's JSON parser refuses.
 */
export function wellFormed(text) {
  if (typeof text.toWellFormed === "function") {
    return text.toWellFormed();
  }
  return text.replace(
    /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g,
    "\uFFFD",
  );
}

/** Constant-shape byte comparison (timing does not matter here; clarity does). */
export function bytesEqual(a, b) {
  if (a.length !== b.length) {
    return false;
  }
  for (let i = 0; i < a.length; i += 1) {
    if (a[i] !== b[i]) {
      return false;
    }
  }
  return true;
}

// The cluster's other nodes, for moving there when this page's node fails.
//
// The hub serves `nodes.json` (same origin): `{"nodes": ["https://n1.example.org", ...]}`,
// the operator's `cluster.client_urls`, empty on one node. The page's WebSocket URLs
// are its own node's first, then each listed origin's in the order given (its own
// left out the second time). Anything that is not a plain http(s) origin is skipped:
// the page's Content-Security-Policy would refuse it anyway; so is an http origin
// for a page served over https (the browser would refuse the plain socket).
//
// Nothing here is stored on the device: the list lives as long as the page.

import { socketUrl } from "./config.js";

/** The WebSocket URL of a page origin (`https://n2.example.org` → `wss://n2.example.org/ws`). */
export function originSocketUrl(origin) {
  let url;
  try {
    url = new URL(origin);
  } catch {
    return null;
  }
  if ((url.protocol !== "https:" && url.protocol !== "http:") || url.username || url.password) {
    return null;
  }
  if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.hash) {
    return null;
  }
  return socketUrl(url);
}

/** This page's own socket URL, then each listed node's, each once. */
export function nodeSocketUrls(origins, loc = globalThis.location) {
  const urls = [socketUrl(loc)];
  for (const origin of Array.isArray(origins) ? origins : []) {
    const url = typeof origin === "string" ? originSocketUrl(origin) : null;
    // A page served over https may not open a plain ws:// socket (mixed content).
    const downgrade = loc.protocol === "https:" && url?.startsWith("ws:");
    if (url && !downgrade && !urls.includes(url)) {
      urls.push(url);
    }
  }
  return urls;
}

/**
 * Asks this page's node for the list. Resolves with the socket URLs (just this
 * node's when there is no list, or it cannot be read: the one-node behaviour).
 */
export async function loadNodeSocketUrls(fetchImpl = globalThis.fetch, loc = globalThis.location) {
  try {
    const response = await fetchImpl("nodes.json", { cache: "no-store", credentials: "omit" });
    if (!response.ok) {
      return nodeSocketUrls([], loc);
    }
    const body = await response.json();
    return nodeSocketUrls(body?.nodes, loc);
  } catch {
    return nodeSocketUrls([], loc);
  }
}

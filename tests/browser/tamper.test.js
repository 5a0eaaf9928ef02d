// A message changed on its way to the browser is shown as unverified. The reader's
// page has its WebSocket intercepted (Playwright's routeWebSocket): every frame passes
// through unchanged except one, whose signed payload has one character altered —
// exactly what a compromised hub or a man in the middle could do. The signature was
// made over the original bytes, so the browser must refuse to vouch for it.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { launch, person } from "./lib/browser.js";
import { agree, expectVerified, joinAs, message, redeem, say } from "./lib/flows.js";
import { startServer } from "./lib/server.js";

const MARKER = "Meet at the usual place";
const ALTERED = "Meet at the usual placf";

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Alters one byte of the signed payload of the post carrying MARKER. */
function tamper(text) {
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    return { text, changed: false };
  }
  if (frame.type === "event" && frame.env?.kind === "post" && frame.env.payload.includes(MARKER)) {
    frame.env.payload = frame.env.payload.replace(MARKER, ALTERED);
    return { text: JSON.stringify(frame), changed: true };
  }
  return { text, changed: false };
}

test("a message altered in transit is shown as unverified, its text hidden behind a warning", { timeout: 90_000 }, async () => {
  const reader = await person(browser, "reader");
  const writer = await person(browser, "writer");
  const r = reader.page;
  const w = writer.page;

  let altered = 0;
  await r.routeWebSocket(/\/ws$/, (ws) => {
    const hub = ws.connectToServer();
    ws.onMessage((m) => hub.send(m));
    hub.onMessage((m) => {
      const { text, changed } = tamper(String(m));
      altered += changed ? 1 : 0;
      ws.send(text);
    });
  });

  // The writer facilitates the demo group; the reader is an admin, so passes the door.
  await redeem(w, server.links.facilitator);
  await joinAs(w, "Jo");
  await agree(w);
  await redeem(r, server.links.admin);
  await r.locator("#go-group").fill("demo");
  await r.getByRole("button", { name: "Continue" }).click();
  await joinAs(r, "Ada");
  await agree(r);

  await say(w, "Good evening, everyone.");
  await say(w, `${MARKER} at eight.`);
  await expectVerified(w, `${MARKER} at eight.`);

  // An untouched message verifies; the altered one does not.
  await expectVerified(r, "Good evening, everyone.");
  const bad = r.locator("#message-list > li.msg-unverified");
  await bad.waitFor();
  assert.equal(altered, 1, "exactly one frame was altered");
  await bad.locator(".mark-bad", { hasText: "Unverified" }).waitFor();
  assert.match(await bad.locator(".msg-author").textContent(), /Message from an unknown sender/);
  assert.match(await bad.locator(".msg-warning").textContent(), /signature doesn't match/);
  // Its claimed author is not shown, and its text stays hidden until asked for.
  assert.equal(await bad.getByText("Jo", { exact: true }).count(), 0);
  const text = bad.locator(".unverified-text");
  assert.equal(await text.isVisible(), false, "the unverified text is hidden at first");
  await bad.getByRole("button", { name: "Show the unverified text" }).click();
  assert.match(await text.textContent(), new RegExp(ALTERED));
  assert.equal(await message(r, `${MARKER} at eight.`).count(), 0, "the original words never appear as verified");
  assert.deepEqual([...reader.problems, ...writer.problems], []);
});

// A message changed on its way to the browser is shown as unverified. The reader's
// page has its WebSocket intercepted (Playwright's routeWebSocket): every frame passes
// through unchanged except one, whose signed payload has one character altered —
// exactly what a compromised hub or a man in the middle could do. The signature was
// made over the original bytes, so the browser must refuse to vouch for it.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { person } from "./lib/browser.js";
import { agree, expectVerified, joinAs, message, noCryptoWords, redeem, say, supportNews } from "./lib/flows.js";
import { startBoth, stopBoth } from "./lib/harness.js";

const MARKER = "Meet at the usual place";
const ALTERED = "Meet at the usual placf";

let server;
let browser;
// The two people of the first test, in the group, for the second.
let reader;
let writer;

before(async () => {
  ({ server, browser } = await startBoth());
});

after(() => stopBoth({ server, browser }));

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
  reader = await person(browser, "reader");
  writer = await person(browser, "writer");
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

  // Nobody is on the rota: the room says so plainly, with the helplines.
  await w.locator("#coverage-line", { hasText: "No supervisor is on call right now" }).waitFor();
  await w.locator("#coverage-helplines li", { hasText: "Emergency services" }).waitFor();
  await w.getByRole("button", { name: "All helplines" }).waitFor();

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
  // Trust by exception: the words about signatures are on the message that failed,
  // and nowhere else on the page.
  assert.match(await bad.innerText(), /signature/);
  await noCryptoWords(r, "a room with one altered message", { except: ".msg-unverified" });
  await noCryptoWords(w, "the writer's room");
  assert.deepEqual([...reader.problems, ...writer.problems], []);
});

test("a facilitator asks a supervisor to offer a member support; the member is told, kindly, with the helplines", { timeout: 60_000 }, async () => {
  assert.ok(reader && writer, "runs after the first test, in the same group");
  const w = writer.page;
  const r = reader.page;
  const row = w.locator("#member-list li", { hasText: "Ada" });
  await row.getByRole("button", { name: "Actions for Ada" }).click();
  await row.getByRole("button", { name: "Ask a supervisor to offer support" }).click();
  const form = row.locator(".flag-form");
  await form.getByLabel("Worth a supervisor's look soon").check();
  await form.getByLabel("Yes, they have agreed").check();
  await form.getByLabel(/Anything else the supervisor should know/).fill("Ada asked me to, after the session.");
  await form.getByRole("button", { name: "Ask a supervisor" }).click();
  // Nobody is on call here: the answer says so, with the helplines.
  await form.locator(".flag-answer", { hasText: "No supervisor is on call right now" }).waitFor();
  await form.locator(".helplines-list li").first().waitFor();
  // Ada hears that someone asked for support for her.
  const told = await supportNews(r, "Someone has asked for support for you");
  assert.match(await told.textContent(), /You are not in trouble/);
  // The emergency line is said; the one helplines sheet is a tap away.
  await r.locator("#support-helplines-lead", { hasText: "call 999" }).waitFor();
  await r.locator("#support-helplines-open").click();
  await r.locator("#helplines-list li").first().waitFor();
  assert.deepEqual([...reader.problems, ...writer.problems], []);
});

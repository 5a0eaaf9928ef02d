// A dropped connection: the participant's socket is cut (and refused for a while)
// through Playwright's routeWebSocket. What they wrote meanwhile is sent once they
// are back, the conversation they missed is resumed from the last seq, and what
// happened to their request for support while they were away is told.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { person } from "./lib/browser.js";
import { agree, expectVerified, joinAs, publicKey, putOnRota, redeem, say, supportNews } from "./lib/flows.js";
import { startBoth, stopBoth } from "./lib/harness.js";

let server;
let browser;

before(async () => {
  ({ server, browser } = await startBoth());
});

after(() => stopBoth({ server, browser }));

test("after a dropped connection the participant resumes: missed messages, their own unsent one, and support news", { timeout: 120_000 }, async () => {
  const admin = await person(browser, "admin");
  const supervisor = await person(browser, "supervisor");
  const facilitator = await person(browser, "facilitator");
  const participant = await person(browser, "participant");
  const p = participant.page;
  const fac = facilitator.page;
  const sup = supervisor.page;

  // The participant's WebSocket goes through a switch the test can open.
  let offline = false;
  let current = null;
  await p.routeWebSocket(/\/ws$/, (ws) => {
    if (offline) {
      ws.close({ code: 1011, reason: "test: offline" });
      return;
    }
    const hub = ws.connectToServer();
    ws.onMessage((m) => hub.send(m));
    hub.onMessage((m) => ws.send(m));
    ws.onClose(() => hub.close());
    hub.onClose(() => ws.close());
    current = ws;
  });

  await redeem(sup, server.links.supervisor);
  const key = await publicKey(sup);
  await sup.getByRole("button", { name: "Open the supervisor console" }).click();
  await redeem(admin.page, server.links.admin);
  await putOnRota(admin.page, key);
  await redeem(fac, server.links.facilitator);
  await joinAs(fac, "Jo");
  await agree(fac);
  await p.goto(server.links.participant);
  await joinAs(p, "River");
  await agree(p);
  await fac.locator("#waiting-list li", { hasText: "River" }).getByRole("button", { name: "Let in" }).click();
  await p.locator("#composer-input:not([disabled])").waitFor();
  await say(fac, "Before the drop.");
  await expectVerified(p, "Before the drop.");

  await p.getByRole("button", { name: "I need support now" }).first().click();
  await p.getByRole("button", { name: "Ask for support" }).click();
  await p.locator("#support-result", { hasText: "has been sent" }).waitFor();

  // The connection drops and stays down.
  offline = true;
  await current.close({ code: 1011, reason: "test: dropped" });
  await p.locator("#connection-status", { hasText: "Connection lost. Reconnecting" }).waitFor();
  await p.locator("#composer-input").fill("Are you still there?");
  await p.locator("#composer-input").press("Enter");

  // Meanwhile the group goes on and the supervisor picks the request up.
  await say(fac, "Said while River was away.");
  const card = sup.locator("#queue-list > li").first();
  await card.getByRole("button", { name: "Acknowledge: I'll take it" }).click();
  await card.locator(".esc-state", { hasText: "You have it" }).waitFor();

  // Back: resumed, sent, told.
  offline = false;
  await p.locator("#connection-status", { hasText: "Connected" }).waitFor({ timeout: 30_000 });
  await expectVerified(p, "Said while River was away.");
  await expectVerified(p, "Are you still there?");
  await expectVerified(fac, "Are you still there?");
  const news = await supportNews(p, "A supervisor is on it");
  await news.waitFor();
  assert.match(await news.textContent(), /While you were disconnected/);
  assert.equal(await p.locator("#message-list > li", { hasText: "Are you still there?" }).count(), 1, "sent once");
  assert.deepEqual([admin, supervisor, facilitator, participant].flatMap((x) => x.problems), []);
});

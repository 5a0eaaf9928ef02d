// Issue 15, reproductions 5 and 6: the supervisor console named the person by a key
// ("About someone (key UKmR)"), and writing privately joined the group visibly ("Sam
// is in the waiting room"), which let others guess who had asked for help. Now the
// card names the person (keys only under "Show key") and the supervisor writes on the
// escalation's private line without entering the group: the person, on a phone, is
// told within the screen; another participant's page shows no sign of a supervisor.
// axe-core on the console at 320 px and 1280 px.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { person } from "./lib/browser.js";
import { agree, joinAs, message, publicKey, putOnRota, redeem, say } from "./lib/flows.js";
import { axeAt, startBoth, stopBoth } from "./lib/harness.js";

const PHONE = { width: 375, height: 740 };

let server;
let browser;

before(async () => {
  ({ server, browser } = await startBoth());
});

after(() => stopBoth({ server, browser }));

function onScreen(page, selector) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    const r = el?.getBoundingClientRect();
    return Boolean(r && r.height > 0 && r.top >= 0 && r.bottom <= innerHeight && r.left >= 0 && r.right <= innerWidth);
  }, selector);
}

test("a supervisor writes to the person from the console without entering the group", { timeout: 120_000 }, async () => {
  const supervisor = await person(browser, "supervisor", { viewport: { width: 1280, height: 800 } });
  const admin = await person(browser, "admin");
  const facilitator = await person(browser, "facilitator");
  const sky = await person(browser, "sky");
  const riverContext = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1, hasTouch: true, isMobile: true, locale: "en-GB" });
  riverContext.setDefaultTimeout(15_000);
  const p = await riverContext.newPage();
  const riverProblems = [];
  p.on("pageerror", (err) => riverProblems.push(`river: ${err.message}`));
  const sup = supervisor.page;
  const fac = facilitator.page;
  const axeFailures = [];

  await redeem(sup, server.links.supervisor);
  const supKey = await publicKey(sup);
  await sup.getByRole("button", { name: "Open the supervisor console" }).click();
  await sup.locator("#supervisor-name").fill("Sam");
  await redeem(admin.page, server.links.admin);
  await putOnRota(admin.page, supKey);

  await redeem(fac, server.links.facilitator);
  await joinAs(fac, "Jo");
  await agree(fac);
  await fac.locator("#facilitator-console").waitFor();

  for (const [page, name] of [
    [p, "River"],
    [sky.page, "Sky"],
  ]) {
    await page.goto(server.links.participant);
    await joinAs(page, name);
    await agree(page);
    const waiting = fac.locator("#waiting-list li", { hasText: name });
    await waiting.waitFor();
    assert.doesNotMatch(await waiting.innerText(), /\b[A-Za-z0-9_-]{4}\b online|\bkey\b/i, "the waiting list names people, no key tags");
    await waiting.getByRole("button", { name: "Let in" }).click();
    await page.locator("#composer-input:not([disabled])").waitFor();
  }

  // River asks for support from a phone.
  await p.locator("#support-now").tap();
  await p.getByRole("button", { name: "Ask for support" }).tap();
  await p.locator("#support-result", { hasText: "Your request for support has been sent" }).waitFor();
  await p.locator("#support-close").tap();

  // The card names River; the key only when asked.
  const card = sup.locator("#queue-list > li").first();
  await card.locator(".esc-about", { hasText: "About River." }).waitFor();
  const cardText = await card.evaluate((el) => el.innerText);
  assert.doesNotMatch(cardText, /\(key [A-Za-z0-9_-]{4}\)|key [A-Za-z0-9_-]{4}\b/, "no key shown unless asked");
  assert.equal(await card.locator(".esc-key span").isVisible(), false);
  await card.locator(".esc-key summary").click();
  assert.equal(await card.locator(".esc-key span").isVisible(), true, "the key is there on request");
  await card.locator(".esc-key summary").click();

  // Sam writes on the line without joining.
  await card.getByRole("button", { name: "Write privately to the person" }).click();
  await card.getByLabel("Your message").fill("Hi River, I'm a supervisor. I'm here if you want to talk.");
  await card.getByRole("button", { name: "Send privately" }).click();
  await card.locator(".esc-status", { hasText: "Sent privately." }).waitFor();
  await card.locator(".esc-line li", { hasText: "I'm here if you want to talk" }).waitFor();
  assert.equal(await sup.locator("#view-supervisor").isVisible(), true, "the supervisor stayed in the console");

  // River is told within the screen, and reads it.
  await p.locator("#private-alert-open", { hasText: "A supervisor has written to you privately" }).waitFor();
  assert.equal(await onScreen(p, "#private-alert-open"), true, "the notice is within the viewport");
  assert.equal(await onScreen(p, "#quick-exit"), true, "quick exit still on screen");
  await p.locator("#private-alert-open").tap();
  await p.locator("#private-title", { hasText: "A supervisor" }).waitFor();
  assert.equal(await onScreen(p, "#private-logs ol:not([hidden]) > li:last-child"), true, "the message is on screen");
  await p.locator("#private-input").fill("Thank you, yes please.");
  await p.locator("#private-input").press("Enter");
  await card.locator(".esc-line li", { hasText: "yes please" }).waitFor();
  await p.locator("#private-close").tap();

  // Sky: after something said later in the room arrives, still no sign of a
  // supervisor — no arrival, nobody new in the list, nothing private.
  await say(fac, "Welcome, everyone.");
  await message(sky.page, "Welcome, everyone.").waitFor();
  const skyText = await sky.page.evaluate(() => document.body.innerText);
  assert.doesNotMatch(skyText, /is in the waiting room|Sam|has written to you privately/, "Sky learns nothing of the supervisor");
  assert.equal(await sky.page.locator("#member-list li", { hasText: "Sam" }).count(), 0);
  const facText = await fac.evaluate(() => document.body.innerText);
  assert.doesNotMatch(facText, /Sam is in the waiting room|Sam joined/, "nor does the facilitator's room");

  await axeAt(sup, "supervisor console with the line open", axeFailures);
  assert.deepEqual(axeFailures, [], "axe-core finds nothing serious at 320 px or 1280 px");
  const problems = [supervisor, admin, facilitator, sky].flatMap((x) => x.problems).concat(riverProblems);
  assert.deepEqual(problems, [], "no page errors");
  await riverContext.close();
});

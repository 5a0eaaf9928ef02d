// A facilitator on a phone (375 × 740, touch): the waiting room is one tap away in the
// console sheet, whose button says how many are waiting; the people sheet holds each
// person's actions; Quick exit stays on screen; the start screen lists the groups this
// device has joined (staff only); a chime for arrivals. axe-core at 320 px and 1280 px.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { person } from "./lib/browser.js";
import { agree, joinAs, redeem, tapTargets } from "./lib/flows.js";
import { axeAt, startBoth, stopBoth } from "./lib/harness.js";
import { REPO } from "./lib/server.js";

const PHONE = { width: 375, height: 740 };

let server;
let browser;

before(async () => {
  ({ server, browser } = await startBoth());
});

after(() => stopBoth({ server, browser }));

function inViewport(page, selector) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    const r = el?.getBoundingClientRect();
    return Boolean(r && r.height > 0 && r.top >= 0 && r.bottom <= innerHeight && r.left >= 0 && r.right <= innerWidth);
  }, selector);
}

test("a facilitator on a phone sees who is waiting and lets them in from the console sheet", { timeout: 90_000 }, async () => {
  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1, hasTouch: true, isMobile: true, locale: "en-GB" });
  context.setDefaultTimeout(15_000);
  const fac = await context.newPage();
  const problems = [];
  fac.on("pageerror", (err) => problems.push(`facilitator: ${err.message}`));
  const participant = await person(browser, "participant");
  const p = participant.page;
  const failures = [];

  await redeem(fac, server.links.facilitator);
  await joinAs(fac, "Jo");
  await agree(fac);
  await fac.locator("#sheet-console", { hasText: "Console" }).waitFor();
  assert.equal(await fac.locator("#support-now").isVisible(), false, "a facilitator has the console, not the self-flag");

  await p.goto(server.links.participant);
  await joinAs(p, "River");
  await agree(p);
  await p.getByRole("heading", { name: "A facilitator will let you in soon" }).waitFor();

  // The console button counts who is waiting; the sheet shows them on screen. A
  // soft chime says someone arrived (counted on the console: tests cannot listen).
  await fac.locator("#sheet-console-count", { hasText: "1 waiting" }).waitFor();
  await fac.waitForFunction(() => Number(document.querySelector("#facilitator-console").dataset.chimes) >= 1);
  await fac.locator("#sheet-console").tap();
  const waiting = fac.locator("#waiting-list li", { hasText: "River" });
  await waiting.waitFor();
  assert.ok(await inViewport(fac, "#waiting-list li"), "the waiting room is on screen");
  await tapTargets(fac, "console sheet");
  assert.ok(await inViewport(fac, "#quick-exit"), "Quick exit is on screen");
  await fac.screenshot({ path: join(REPO, "docs/screenshots/phone-facilitator-console.png"), animations: "disabled", caret: "hide" });
  await axeAt(fac, "facilitator console sheet", failures);
  await waiting.getByRole("button", { name: "Let in" }).tap();
  await p.locator("#composer-input:not([disabled])").waitFor();
  await fac.locator("#sheet-console-count").waitFor({ state: "hidden" });
  // The sound can be turned off, and stays off on this device.
  await fac.locator("#console-sound").tap();
  assert.equal(await fac.locator("#console-sound").getAttribute("aria-pressed"), "false");
  await fac.locator("#side-column [data-close-sheet]").tap();

  // The people sheet: River's actions, with no hand over for a participant.
  await fac.locator("#sheet-people").tap();
  const row = fac.locator("#member-list li", { hasText: "River" });
  await row.getByRole("button", { name: "Actions for River" }).tap();
  assert.equal(await row.getByRole("button", { name: "Hand over the lead" }).count(), 0);
  await tapTargets(fac, "people sheet");
  assert.ok(await inViewport(fac, "#quick-exit"), "Quick exit is on screen");
  await fac.screenshot({ path: join(REPO, "docs/screenshots/phone-facilitator-people.png"), animations: "disabled", caret: "hide" });
  await axeAt(fac, "facilitator people sheet", failures);

  // Leaving asks first; the start screen then lists this device's groups for staff.
  await fac.locator("#members-panel [data-close-sheet]").tap();
  await fac.locator("#leave-group").tap();
  await fac.getByRole("button", { name: "Yes, leave the group" }).tap();
  await fac.getByRole("heading", { name: "Welcome" }).waitFor();
  await fac.locator("#app-notice-text", { hasText: "You've left the group." }).waitFor();
  await fac.getByRole("button", { name: "demo, as Jo" }).tap();
  await fac.getByRole("heading", { name: /Join the group/ }).waitFor();
  await fac.waitForFunction(() => document.querySelector("#join-name").value === "Jo");
  // "About this device" holds the key, and forgets the names on request.
  await fac.getByRole("button", { name: "Back" }).tap();
  await fac.getByRole("heading", { name: "Welcome" }).waitFor();
  await fac.locator("#about-device summary").tap();
  await fac.locator("#key-full").waitFor();
  await fac.getByRole("button", { name: "Forget the names" }).tap();
  await fac.locator("#names-forget-result", { hasText: "no longer remembers" }).waitFor();
  // The group stays listed (this device keeps its key for it), without the name.
  await fac.getByRole("button", { name: "demo", exact: true }).waitFor();

  assert.deepEqual(failures, [], "axe-core finds nothing serious at 320 px or 1280 px");
  assert.deepEqual([...problems, ...participant.problems], []);
  await context.close();
});

// Facilitators per group from the admin's screen (issue 14, item 2, and issue 15's
// guarded actions): the hub granted and revoked a facilitator's groups only through
// the `grant` frame or `peerhub grant`, so an admin on the web could not see who runs
// what, nor take a group away from someone who left. "Staff and the groups they run"
// lists staff by name with their groups; a group that does not exist is refused in
// the form; taking a group away asks first, and the facilitator's console in that
// group closes at once with a plain sentence. The two admin panels that show staff
// share one read of the list. axe-core at 320 and 1280 px.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { person } from "./lib/browser.js";
import { joinAs, redeem } from "./lib/flows.js";
import { axeAt, startBoth, stopBoth } from "./lib/harness.js";

let server;
let browser;

before(async () => {
  ({ server, browser } = await startBoth());
});

after(() => stopBoth({ server, browser }));

test("an admin sees who runs which group, lets someone run another, and takes it away", { timeout: 120_000 }, async () => {
  const admin = await person(browser, "admin");
  const facilitator = await person(browser, "facilitator");
  const a = admin.page;
  const f = facilitator.page;
  const axeFailures = [];

  // The admin's start screen reads the staff list once for its two panels (the
  // rota's supervisor picker and this list), not once per panel.
  const staffRequests = [];
  a.on("websocket", (ws) =>
    ws.on("framesent", ({ payload }) => {
      if (typeof payload === "string" && JSON.parse(payload).type === "staff") staffRequests.push(payload);
    }),
  );
  await redeem(a, server.links.admin, { name: "Ada Okonjo" });
  await a.locator("#team-list > li", { hasText: "Ada Okonjo (you)" }).waitFor();
  await a.locator("#rota-pick option").first().waitFor({ state: "attached" });
  assert.equal(staffRequests.length, 1, "one staff request for both panels");
  await redeem(f, server.links.facilitator, { name: "Jo Mensah" });
  // A second group, without a waiting room, for the facilitator to be given.
  await a.locator("#create-id").fill("evening-circle");
  await a.locator("#create-title").fill("Evening circle");
  await a.getByRole("button", { name: "Create group" }).click();
  const link = (await a.locator("#create-result .share-link code").textContent()).trim();

  // The list names Jo, with the demo group the invite granted.
  await a.locator("#team-reload").click();
  const jo = a.locator("#team-list > li", { hasText: "Jo Mensah" });
  await jo.locator(".team-group", { hasText: "demo" }).waitFor();
  assert.doesNotMatch(await jo.innerText(), /key/i, "a named person is shown by name only");
  await a.locator("#team-list > li", { hasText: "Ada Okonjo (you)" }).waitFor();
  await axeAt(a, "staff list", axeFailures);

  // A group that does not exist is refused in the form, and nothing changes.
  const joKey = await a.locator("#team-person option", { hasText: "Jo Mensah" }).getAttribute("value");
  await a.locator("#team-person").selectOption(joKey);
  await a.locator("#team-group").fill("no-such-circle");
  await a.getByRole("button", { name: "Let them facilitate it" }).click();
  await a.locator("#team-group-error", { hasText: "There is no group no-such-circle" }).waitFor();
  assert.equal(await jo.locator(".team-group").count(), 1);

  // Jo is given the evening circle, and has its console there.
  await a.locator("#team-group").fill("evening-circle");
  await a.getByRole("button", { name: "Let them facilitate it" }).click();
  await a.locator("#team-result", { hasText: "Jo Mensah now runs evening-circle." }).waitFor();
  await jo.locator(".team-group", { hasText: "evening-circle" }).waitFor();
  await f.goto(link);
  await joinAs(f, "Jo");
  await f.locator("#facilitator-console").waitFor();

  // Taking it away asks first; "Cancel" changes nothing.
  const takeAway = jo.getByRole("button", { name: "Stop them running evening-circle" });
  await takeAway.click();
  const box = jo.locator(".confirm:not([hidden])");
  await box.waitFor();
  assert.match(await box.innerText(), /sent out of it at once/);
  assert.equal(await a.evaluate(() => document.activeElement?.textContent), "Cancel", "Cancel has the focus");
  await axeAt(a, "take-away confirm", axeFailures);
  await box.getByRole("button", { name: "Cancel" }).click();
  assert.equal(await f.locator("#facilitator-console").isVisible(), true, "Cancel took nothing away");

  await takeAway.click();
  await jo.getByRole("button", { name: "Yes, take evening-circle away" }).click();
  await a.locator("#team-result", { hasText: "Jo Mensah no longer runs evening-circle." }).waitFor();
  await a.locator("#team-list > li", { hasText: "Jo Mensah" }).locator(".team-group", { hasText: "evening-circle" }).waitFor({ state: "detached" });

  // Jo's console in that group closes at once, in plain words; demo is untouched.
  await f.locator("#dismissed-title", { hasText: "You no longer run this group" }).waitFor();
  await a.locator("#team-list > li", { hasText: "Jo Mensah" }).locator(".team-group", { hasText: "demo" }).waitFor();

  assert.deepEqual(axeFailures, []);
  assert.deepEqual([...admin.problems, ...facilitator.problems], []);
});

// Facilitators per group (issue 14, item 2): the admin's invite form names the
// group(s) a facilitator invite grants; the link opens that group, where the new
// facilitator has the console; in another group they wait at the door like anyone,
// with no console. A form without a group is refused before anything is signed.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { person } from "./lib/browser.js";
import { agree, joinAs, redeem } from "./lib/flows.js";
import { startBoth, stopBoth } from "./lib/harness.js";

let server;
let browser;

before(async () => {
  ({ server, browser } = await startBoth());
});

after(() => stopBoth({ server, browser }));

test("a facilitator invite made in the form names its group, opens it with the console, and no other", { timeout: 90_000 }, async () => {
  const admin = await person(browser, "admin");
  const facilitator = await person(browser, "new facilitator");
  const a = admin.page;
  const f = facilitator.page;

  await redeem(a, server.links.admin);
  await a.locator("#invite-role").selectOption("facilitator");
  await a.getByText("Groups they will facilitate").waitFor();
  // No group: refused in the form, nothing made.
  await a.getByRole("button", { name: "Make the invite link" }).click();
  await a.locator("#invite-group-error").waitFor();
  assert.equal(await a.locator("#invite-result code").count(), 0);

  await a.locator("#invite-group").fill("demo");
  await a.getByRole("button", { name: "Make the invite link" }).click();
  const result = a.locator("#invite-result");
  await result.getByText(/role in demo/).waitFor();
  const link = (await result.locator("code").textContent()).trim();
  assert.match(link, /#invite=[^&]+&group=demo&staff=1$/);

  await redeem(f, link);
  await joinAs(f, "Jo");
  await agree(f);
  await f.locator("#facilitator-console").waitFor();

  // In a group the invite did not name, they wait at the door like anyone, with
  // no console.
  await a.locator("#create-id").fill("other-circle");
  await a.locator("#create-title").fill("Other circle");
  await a.getByRole("button", { name: "Create group" }).click();
  const other = (await a.locator("#admin-panel .share-link code").textContent()).trim();
  await f.goto(other);
  await joinAs(f, "Jo");
  await f.getByRole("heading", { name: "A facilitator will let you in soon" }).waitFor();
  assert.equal(await f.locator("#facilitator-console").isVisible(), false, "no console in a group not granted");

  const problems = [...admin.problems, ...facilitator.problems];
  assert.deepEqual(problems, []);
});

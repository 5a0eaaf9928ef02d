// Issue 13, reproduction 7: people in the waiting room who asked for support were
// listed to the facilitator as "online, has agreed, waiting". Now the facilitator's
// console says who asked and how seriously — in the waiting room, in the member list
// and in the staff channel — and the wording of "I need support now" says exactly who
// is told.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { person } from "./lib/browser.js";
import { agree, joinAs, redeem } from "./lib/flows.js";
import { startBoth, stopBoth } from "./lib/harness.js";

let server;
let browser;
const people = [];

before(async () => {
  ({ server, browser } = await startBoth());
});

after(() => stopBoth({ server, browser }));

test("a facilitator's console shows who in the waiting room asked for support, and how seriously", { timeout: 120_000 }, async (t) => {
  const facilitator = await person(browser, "facilitator");
  const participant = await person(browser, "participant");
  people.push(facilitator, participant);
  t.after(() => {
    const problems = people.flatMap((p) => p.problems);
    if (problems.length) {
      t.diagnostic(problems.join("\n"));
    }
  });
  const fac = facilitator.page;
  const p = participant.page;

  await redeem(fac, server.links.facilitator);
  await joinAs(fac, "Jo");
  await agree(fac);
  await fac.locator("#facilitator-console").waitFor();

  await p.goto(server.links.participant);
  await joinAs(p, "River");
  await agree(p);
  await p.getByRole("heading", { name: "A facilitator will let you in soon" }).waitFor();
  const waiting = fac.locator("#waiting-list li", { hasText: "River" });
  await waiting.waitFor();
  assert.equal(await waiting.locator(".waiting-support").isVisible(), false, "nothing said before anyone asks");

  // From the waiting room, River asks for support; the form says who is told.
  await p.locator("#support-now").click();
  await p.getByRole("heading", { name: "Ask for support now" }).waitFor();
  const who = await p.locator("#support-who").textContent();
  assert.match(who, /the supervisor on call/);
  assert.match(who, /the facilitators of this group, at once/);
  assert.match(who, /Nobody else in the group is told/);
  await p.getByLabel("I'm in danger now").check();
  await p.getByLabel("Anything you'd like the supervisor to know (optional)").fill("Please, someone, now.");
  await p.getByRole("button", { name: "Ask for support" }).click();
  await p.locator("#support-result", { hasText: "Your request for support has been sent" }).waitFor();

  // The facilitator sees it at once on River in the waiting room ...
  await waiting.locator(".waiting-support", { hasText: "Asked for support (emergency: may be in danger now)." }).waitFor();
  // ... and in the staff channel, from the hub, with River's own words.
  const note = fac.locator("#staff-list li", { hasText: "River asked for support" });
  await note.waitFor();
  await note.locator(".hub-label", { hasText: "From the hub" }).waitFor();
  await note.getByText("In their words: “Please, someone, now.”").waitFor();
  await note.getByRole("button", { name: "Check in with River" }).waitFor();

  // Let in: the member list says it too.
  await waiting.getByRole("button", { name: "Let in" }).click();
  await fac
    .locator("#member-list li", { hasText: "River" })
    .locator(".member-state", { hasText: "asked for support (emergency: may be in danger now)" })
    .waitFor();

  // After a reload and joining again it is still shown: the note is in the staff
  // history the hub re-sends on every join.
  await fac.reload();
  await joinAs(fac, "Jo");
  await fac.locator("#facilitator-console").waitFor();
  await fac
    .locator("#member-list li", { hasText: "River" })
    .locator(".member-state", { hasText: "asked for support (emergency" })
    .waitFor();

  const problems = people.flatMap((x) => x.problems);
  assert.deepEqual(problems, [], "no page errors in any browser");
});

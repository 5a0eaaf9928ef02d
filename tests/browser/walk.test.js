// The whole path of a call for help, in three people's browsers (and an admin's):
// join → agreement → admitted → chat (verified marks) → mute → "I need support now"
// → the on-call supervisor acknowledges → talks privately → resolves → the session
// ends. Everything goes through the real server binary and real WebSockets, and every
// mark checked here is the browser's own verification.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { person } from "./lib/browser.js";
import { agree, expectVerified, joinAs, message, publicKey, putOnRota, redeem, say, supportNews } from "./lib/flows.js";
import { startBoth, stopBoth } from "./lib/harness.js";

let server;
let browser;
const people = [];

before(async () => {
  ({ server, browser } = await startBoth());
});

after(() => stopBoth({ server, browser }));

test("a participant's call for help reaches the on-call supervisor, who acknowledges and resolves it", { timeout: 150_000 }, async (t) => {
  const origin = new URL(server.url).origin;
  const admin = await person(browser, "admin");
  const supervisor = await person(browser, "supervisor", { permissions: ["notifications"], origin });
  const facilitator = await person(browser, "facilitator");
  const participant = await person(browser, "participant");
  people.push(admin, supervisor, facilitator, participant);
  t.after(() => {
    const problems = people.flatMap((p) => p.problems);
    if (problems.length) {
      t.diagnostic(problems.join("\n"));
    }
  });
  const sup = supervisor.page;
  const fac = facilitator.page;
  const p = participant.page;

  // The supervisor takes their role and opens the console, with sound and notifications.
  await redeem(sup, server.links.supervisor);
  const supervisorKey = await publicKey(sup);
  await sup.getByRole("button", { name: "Open the supervisor console" }).click();
  await sup.getByRole("heading", { name: "Supervisor console" }).waitFor();
  await sup.getByRole("button", { name: "Turn on sound and notifications" }).click();
  await sup.locator("#alerts-status", { hasText: "Notifications are on." }).waitFor();
  await sup.locator("#supervisor-name").fill("Sam");

  // The admin puts them on call.
  await redeem(admin.page, server.links.admin);
  await admin.page.locator("#rota-panel").waitFor();
  await putOnRota(admin.page, supervisorKey);
  await sup.locator("#supervisor-oncall", { hasText: "You are on call now (level 1)" }).waitFor();
  await sup.locator("#oncall", { hasText: "On call" }).waitFor();

  // The facilitator opens the demo group.
  await redeem(fac, server.links.facilitator);
  await joinAs(fac, "Jo");
  await agree(fac);
  await fac.locator("#facilitator-console").waitFor();

  // The participant joins from the link, reads the agreement and waits.
  await p.goto(server.links.participant);
  await joinAs(p, "River");
  await p.getByRole("heading", { name: "The group agreement" }).waitFor();
  await agree(p);
  await p.getByRole("heading", { name: "A facilitator will let you in soon" }).waitFor();
  await p.locator("#coverage-line", { hasText: "A supervisor is on call" }).waitFor();

  // Let in from the waiting room.
  const waiting = fac.locator("#waiting-list li", { hasText: "River" });
  await waiting.getByRole("button", { name: "Let in" }).click();
  await p.locator("#composer-input:not([disabled])").waitFor();

  // Chat: each sees the other's message with the browser's own verified mark.
  await say(p, "Hello everyone, first time here.");
  await expectVerified(fac, "Hello everyone, first time here.");
  await say(fac, "Welcome, River. Take your time.");
  await expectVerified(p, "Welcome, River. Take your time.");
  await expectVerified(p, "Hello everyone, first time here.");

  // The facilitator mutes River; River sees it, signed, and why they can't write.
  const actions = fac.locator("#member-list li", { hasText: "River" });
  await actions.getByRole("button", { name: "Actions for River" }).click();
  await actions.getByRole("button", { name: "Mute", exact: true }).click();
  const muteSentence = p.locator('#message-list .msg-control[data-verified="true"]', { hasText: "Jo muted you for 10 minutes." });
  await muteSentence.waitFor();
  await p.locator("#composer-state", { hasText: "A facilitator has muted you" }).waitFor();
  assert.equal(await p.locator("#composer-input").isDisabled(), true, "the muted participant's composer is off");

  // Muted, River still asks for support: a real self-flag, urgent by default.
  await p.getByRole("button", { name: "I need support now" }).first().click();
  await p.getByRole("heading", { name: "Ask for support now" }).waitFor();
  assert.equal(await p.getByLabel("I need support soon").isChecked(), true, "urgent is the default");
  await p.getByLabel("Anything you'd like the supervisor to know (optional)").fill("Things are really hard tonight.");
  await p.getByRole("button", { name: "Ask for support" }).click();
  await p.locator("#support-result", { hasText: "Your request for support has been sent. A supervisor is on call" }).waitFor();
  // The private line to the lead facilitator is the next step, one button away.
  await p.getByRole("button", { name: "Write privately to Jo" }).waitFor();

  // It reaches the supervisor: most serious first, counting down, alerted.
  const card = sup.locator("#queue-list > li").first();
  await card.locator(".esc-heading", { hasText: "Urgent Escalation 1 in group demo" }).waitFor();
  await card.locator(".esc-state", { hasText: "level 1, the supervisor on call (you)" }).waitFor();
  await card.locator(".esc-deadline", { hasText: "Time left to acknowledge:" }).waitFor();
  await sup.locator("#alerts-status", { hasText: "Last alert at" }).waitFor();
  assert.match(await sup.locator("#alerts-status").textContent(), /sound played, notification shown/);
  await sup.locator("#oncall", { hasText: "1 waiting" }).waitFor();

  // Its flag, the messages before it and its steps are each verified in the browser.
  await card.getByText("The flag (1)").click();
  await card.locator(".esc-item", { hasText: "Things are really hard tonight." }).locator(".mark-ok").waitFor();
  await card.getByText(/What was said before it/).click();
  const said = card.locator(".esc-item", { hasText: "Hello everyone, first time here." });
  await said.locator(".mark-ok").waitFor();
  assert.equal(await card.locator(".mark-bad").count(), 0, "nothing in the escalation is unverified");

  // Acknowledge; River is told, kindly.
  await card.getByRole("button", { name: "Acknowledge: I'll take it" }).click();
  await card.locator(".esc-state", { hasText: "You have it" }).waitFor();
  await supportNews(p, "A supervisor is on it");
  await supportNews(fac, "A supervisor is on it");

  // The supervisor writes to River privately, on the escalation's line, from the
  // console (without joining the group).
  await card.getByRole("button", { name: "Write privately to the person" }).click();
  await card.getByLabel("Your message").fill("Hi River, I'm Sam, a supervisor. I'm here now.");
  await card.getByRole("button", { name: "Send privately" }).click();
  await card.locator(".esc-status", { hasText: "Sent privately." }).waitFor();
  // Told under the top bar, tap to open; verified, with no mark to read past.
  await p.locator("#private-alert-open", { hasText: "has written to you privately" }).click();
  const fromSam = p.locator('#private-logs li[data-verified="true"]', { hasText: "I'm Sam, a supervisor" });
  await fromSam.waitFor();

  // Still in the console: a note, then resolve with an outcome.
  await card.getByLabel("Add a note").fill("Talked privately; River is safe for tonight.");
  await card.getByRole("button", { name: "Add the note" }).click();
  await card.getByText(/What has happened/).click();
  await card.locator(".esc-steps li", { hasText: "added a note" }).locator(".mark-ok").waitFor();
  await card.getByLabel("Resolve: what was the outcome?").fill("Safe plan agreed with River.");
  await card.getByRole("button", { name: "Resolve", exact: true }).click();
  await sup.locator("#closed-list > li", { hasText: "Safe plan agreed with River." }).waitFor();
  await supportNews(p, "The request for support is closed");

  // The facilitator ends the session; River sees that it has ended.
  await fac.getByRole("button", { name: "End the session" }).click();
  await fac.getByRole("button", { name: "Yes, end the session" }).click();
  await p.getByRole("heading", { name: "The session has ended" }).waitFor();
  await p.locator("#dismissed-helplines-lead", { hasText: "call 999" }).waitFor();
  await p.getByRole("button", { name: /^Helplines/ }).last().click();
  await p.locator("#helplines-list li").first().waitFor();

  const problems = people.flatMap((x) => x.problems);
  assert.deepEqual(problems, [], "no page errors in any browser");
});

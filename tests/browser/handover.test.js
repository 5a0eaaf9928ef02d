// Two supervisors on the rota: a flag level 1 doesn't acknowledge in time moves to
// level 2 (who is alerted), the second supervisor takes it, the first sees who has it,
// and it is handed back and resolved. Deadlines are seconds long here.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { person } from "./lib/browser.js";
import { agree, joinAs, publicKey, redeem, supportNews } from "./lib/flows.js";
import { startBoth, stopBoth } from "./lib/harness.js";

let server;
let browser;

before(async () => {
  ({ server, browser } = await startBoth({ deadlines: { emergency: 4_000, urgent: 4_000, concern: 4_000 } }));
});

after(() => stopBoth({ server, browser }));

test("an unacknowledged flag moves to level 2; one supervisor has it, the other sees who; handed over and resolved", { timeout: 120_000 }, async () => {
  const origin = new URL(server.url).origin;
  const admin = await person(browser, "admin");
  const first = await person(browser, "first supervisor", { permissions: ["notifications"], origin });
  const second = await person(browser, "second supervisor", { permissions: ["notifications"], origin });
  const participant = await person(browser, "participant");
  const a = admin.page;
  const s1 = first.page;
  const s2 = second.page;
  const p = participant.page;

  // The admin invites a second supervisor through the invite form.
  await redeem(a, server.links.admin);
  await a.locator("#invite-role").selectOption("supervisor");
  await a.getByRole("button", { name: "Make the invite link" }).click();
  const link = (await a.locator("#invite-result code").textContent()).trim();
  await redeem(s1, server.links.supervisor);
  await redeem(s2, link);
  const k1 = await publicKey(s1);
  const k2 = await publicKey(s2);

  // Level 1 and level 2 on the rota, picked from the staff list (read again: both
  // redeemed after the admin's console opened), saved together.
  await a.locator("#rota-reload").click();
  await a.locator(`#rota-pick option[value="${k2}"]`).waitFor({ state: "attached" });
  await a.locator("#rota-pick").selectOption(k1);
  await a.getByRole("button", { name: "Add to the list" }).click();
  await a.locator("#rota-pick").selectOption(k2);
  await a.locator("#rota-level").selectOption("2");
  await a.getByRole("button", { name: "Add to the list" }).click();
  await a.locator("#rota-unsaved").waitFor();
  await a.getByRole("button", { name: "Save the rota" }).click();
  await a.locator("#rota-result", { hasText: "The rota is saved and in force." }).waitFor();
  assert.equal(await a.locator("#rota-list li").count(), 2);

  for (const page of [s1, s2]) {
    await page.getByRole("button", { name: "Open the supervisor console" }).click();
    await page.getByRole("button", { name: "Turn on sound and notifications" }).click();
  }
  await s2.locator("#supervisor-oncall", { hasText: "level 2" }).waitFor();

  // A participant asks for support while waiting (no facilitator has let them in).
  await p.goto(server.links.participant);
  await joinAs(p, "River");
  await agree(p);
  await p.locator("#support-now").click();
  await p.getByLabel("I'm in danger now").check();
  await p.getByRole("button", { name: "Ask for support" }).click();
  await p.locator("#support-result", { hasText: "Your request for support has been sent" }).waitFor();

  // Level 1 waits; nobody answers; it moves to level 2, and the second is alerted.
  const c1 = s1.locator("#queue-list > li").first();
  const c2 = s2.locator("#queue-list > li").first();
  await c1.locator(".esc-state", { hasText: "level 1" }).waitFor();
  await c2.locator(".esc-state", { hasText: "level 2, the second line (you)" }).waitFor({ timeout: 15_000 });
  await s2.locator("#alerts-status", { hasText: "Last alert at" }).waitFor();

  await c2.getByRole("button", { name: "Acknowledge: I'll take it" }).click();
  await c2.locator(".esc-state", { hasText: "You have it" }).waitFor();
  await c1.locator(".esc-state", { hasText: "Taken by someone" }).waitFor();
  assert.equal(await c1.getByRole("button", { name: "Acknowledge: I'll take it" }).count(), 0, "nothing to acknowledge once taken");
  await supportNews(p, "A supervisor is on it");

  // Handed back to the first, who resolves it.
  await c2.getByLabel("Hand over to another supervisor").selectOption(k1);
  await c2.getByRole("button", { name: "Hand over" }).click();
  await c1.locator(".esc-state", { hasText: "You have it" }).waitFor();
  await c1.getByLabel("Resolve: what was the outcome?").fill("Called back; safe.");
  await c1.getByRole("button", { name: "Resolve", exact: true }).click();
  await supportNews(p, "The request for support is closed");

  // The step log, every step signed by its actor or said to be the hub's.
  const done = s2.locator("#closed-list > li").first();
  await done.getByText(/What has happened/).click();
  // The steps are read from the hub when the part is opened.
  await done.locator(".esc-steps > li", { hasText: "resolved it" }).waitFor();
  const steps = done.locator(".esc-steps > li");
  const words = await steps.allTextContents();
  assert.ok(words.some((w) => /routed it to level 2/.test(w)), words.join("\n"));
  assert.ok(words.some((w) => /You handed it over/.test(w)), words.join("\n"));
  assert.ok(words.some((w) => /resolved it\. Outcome: “Called back; safe\.”/.test(w)), words.join("\n"));
  assert.equal(await done.locator(".mark-bad").count(), 0, "every signed step verifies");
  assert.deepEqual([admin, first, second, participant].flatMap((x) => x.problems), []);
});

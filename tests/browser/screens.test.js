// Every screen, as people see it: one walk through all of them (start, join,
// agreement, waiting, room, flagging a message, asking for support, the facilitator
// console, the supervisor console, admin, helplines, dismissed), at desktop width and
// at 320 px. At each stop axe-core checks the page and a screenshot is saved to
// docs/screenshots/. The tests below then judge what the walk found.

import assert from "node:assert/strict";
import { mkdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { DESKTOP, NARROW, person } from "./lib/browser.js";
import { agree, joinAs, message, publicKey, putOnRota, redeem, say } from "./lib/flows.js";
import { axeViolations, startBoth, stopBoth } from "./lib/harness.js";
import { REPO } from "./lib/server.js";

const SHOTS = join(REPO, "docs/screenshots");
const SCREENS = [
  "start",
  "join",
  "agreement",
  "waiting",
  "room",
  "flag-message",
  "support",
  "facilitator-console",
  "supervisor-console",
  "admin",
  "helplines",
  "dismissed",
];
const MAX_SHOT_BYTES = 400 * 1024;

// name -> { desktop: violations, narrow: violations }
const found = new Map();
const problems = [];
let server;
let browser;

/** Runs axe-core in the page (injected through the debugging protocol, so the page's
 * strict CSP stays on) and returns the serious and critical violations. */

/** Checks and photographs one screen at both widths; `focus` is scrolled into view.
 * `narrow` opens what a phone shows as a sheet (and is undone by `wide`). */
async function visit(name, page, focus = null, { narrow = null, wide = null } = {}) {
  const results = {};
  for (const [width, size] of [["desktop", DESKTOP], ["narrow", NARROW]]) {
    await page.setViewportSize(size);
    if (width === "narrow" && narrow) {
      await narrow(page);
    }
    if (focus) {
      await page.locator(focus).first().scrollIntoViewIfNeeded();
    } else {
      await page.evaluate(() => globalThis.scrollTo(0, 0));
    }
    results[width] = await axeViolations(page);
    const file = join(SHOTS, width === "desktop" ? `${name}.png` : `${name}-320.png`);
    await page.screenshot({ path: file, animations: "disabled", caret: "hide" });
  }
  if (narrow && wide) {
    await wide(page);
  }
  await page.setViewportSize(DESKTOP);
  found.set(name, results);
}

before(async () => {
  await mkdir(SHOTS, { recursive: true });
  ({ server, browser } = await startBoth());
  const origin = new URL(server.url).origin;
  const participant = await person(browser, "participant");
  const facilitator = await person(browser, "facilitator");
  const supervisor = await person(browser, "supervisor", { permissions: ["notifications"], origin });
  const admin = await person(browser, "admin");
  const everyone = [participant, facilitator, supervisor, admin];
  const p = participant.page;
  const fac = facilitator.page;
  const sup = supervisor.page;

  try {
    await p.goto(server.url);
    await p.getByRole("heading", { name: "Welcome" }).waitFor();
    await visit("start", p);

    await p.goto(server.links.participant);
    await p.getByRole("heading", { name: /Join the group/ }).waitFor();
    await p.locator("#join-name").fill("River");
    await visit("join", p);

    await joinAs(p, "River");
    await p.getByRole("heading", { name: "The group agreement" }).waitFor();
    await visit("agreement", p);

    // A supervisor, on call, with the console open.
    await redeem(sup, server.links.supervisor);
    const key = await publicKey(sup);
    await sup.getByRole("button", { name: "Open the supervisor console" }).click();
    await sup.getByRole("button", { name: "Turn on sound and notifications" }).click();
    await sup.locator("#supervisor-name").fill("Sam");

    await redeem(admin.page, server.links.admin);
    await putOnRota(admin.page, key);
    await admin.page.locator("#create-id").fill("tuesday-evening");
    await admin.page.locator("#create-title").fill("Tuesday evening drop-in");
    await visit("admin", admin.page, "#rota-panel");

    await redeem(fac, server.links.facilitator);
    await joinAs(fac, "Jo");
    await agree(fac);

    await agree(p);
    await p.getByRole("heading", { name: "A facilitator will let you in soon" }).waitFor();
    await visit("waiting", p);

    await fac.locator("#waiting-list li", { hasText: "River" }).getByRole("button", { name: "Let in" }).click();
    await p.locator("#composer-input:not([disabled])").waitFor();
    await say(fac, "Welcome, everyone. There's no rush: say hello when you're ready.");
    await say(p, "Hi. It's my first time here; it's been a hard week.");
    await say(fac, "Thank you for coming, River. We're glad you're here.");
    await p.locator('#message-list > li[data-verified="true"]', { hasText: "We're glad you're here." }).waitFor();
    await visit("room", p, "#composer");

    // The facilitator console, with River in the room.
    await fac.locator('#message-list > li[data-verified="true"]', { hasText: "it's been a hard week" }).waitFor();
    await fac.getByRole("button", { name: "Actions for River" }).click();
    // On a phone the people (with River's actions) are a sheet, opened from the room bar.
    await visit("facilitator-console", fac, "#members-panel", {
      narrow: (page) => page.locator("#sheet-people").click(),
      wide: (page) => page.locator("#members-panel [data-close-sheet]").click(),
    });

    // Flagging someone else's message: the form says who is told, and when not.
    const item = message(p, "We're glad you're here.");
    await item.getByRole("button", { name: /Options/ }).click();
    await item.getByRole("button", { name: "Flag this message" }).click();
    await item.locator(".flag-form").waitFor();
    await item.getByLabel(/No: I believe they are at risk/).check();
    await visit("flag-message", p, ".flag-form");
    // Sent without asking, for a risk of immediate harm, and not told yet: both need a reason.
    await item.getByRole("button", { name: "Ask a supervisor" }).click();
    await item.locator(".field-error", { hasText: "Please say why" }).waitFor();
    await item.getByLabel("Why do you believe the risk is immediate? (required)").fill("They said they were saying goodbye.");
    await item.getByLabel("Don't tell them yet").check();
    await item.getByLabel(/Why telling them now could make things worse/).fill("They said they would leave if anyone noticed.");
    await item.getByRole("button", { name: "Ask a supervisor" }).click();
    await item.locator(".flag-answer", { hasText: "Your request for a supervisor to offer them support has been sent" }).waitFor();
    await item.getByRole("button", { name: "Close" }).click();

    // Asking for support (the form), then its answer.
    await p.getByRole("button", { name: "I need support now" }).first().click();
    await p.getByRole("heading", { name: "Ask for support now" }).waitFor();
    await p.getByLabel("I'm in danger now").check();
    await p.getByLabel("Anything you'd like the supervisor to know (optional)").fill("I don't feel safe tonight.");
    await visit("support", p, "#support-panel");
    await p.getByRole("button", { name: "Ask for support" }).click();
    await p.locator("#support-result", { hasText: "Your request for support has been sent" }).waitFor();

    // The supervisor console with the escalation, its flag and context open.
    const card = sup.locator("#queue-list > li").first();
    await card.locator(".esc-deadline", { hasText: "Time left to acknowledge" }).waitFor();
    await card.getByText("The flag (1)").click();
    await card.getByText(/What was said before it/).click();
    await visit("supervisor-console", sup);

    // Helplines, one click away.
    await p.locator("#helplines-toggle").click();
    await p.locator("#helplines").waitFor();
    await visit("helplines", p);
    await p.locator("#helplines-close").click();

    // The session ends.
    await fac.getByRole("button", { name: "End the session" }).click();
    await fac.getByRole("button", { name: "Yes, end the session" }).click();
    await p.getByRole("heading", { name: "The session has ended" }).waitFor();
    await visit("dismissed", p);
  } finally {
    problems.push(...everyone.flatMap((x) => x.problems));
  }
});

after(() => stopBoth({ server, browser }));

describe("every screen", () => {
  test("axe-core finds no serious or critical accessibility problems on any screen, at desktop width or 320 px", () => {
    assert.deepEqual([...found.keys()].sort(), [...SCREENS].sort(), "every screen was visited");
    const failures = [];
    for (const [name, results] of found) {
      for (const [width, violations] of Object.entries(results)) {
        for (const v of violations) {
          failures.push(`${name} (${width}): ${v.impact} ${v.id}: ${v.help} at ${v.targets.join(", ")}`);
        }
      }
    }
    assert.deepEqual(failures, []);
    assert.deepEqual(problems, [], "no page errors");
  });

  test("a screenshot of every screen, at desktop width and at 320 px, is saved small in docs/screenshots", async () => {
    for (const name of SCREENS) {
      for (const file of [`${name}.png`, `${name}-320.png`]) {
        const info = await stat(join(SHOTS, file));
        assert.ok(info.size > 2_000, `${file} has a picture in it`);
        assert.ok(info.size < MAX_SHOT_BYTES, `${file} is small (${info.size} bytes)`);
      }
    }
  });
});

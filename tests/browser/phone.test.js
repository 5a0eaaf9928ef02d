// A person in distress on a phone (375 × 740, touch): the whole participant path, from
// the link to the end of the session, with a facilitator and an on-call supervisor on
// desktops. At every step Quick exit and "I need support now" are on screen and not
// covered; a private message from a facilitator or a supervisor is told within the
// screen the moment it arrives, and never takes over the thread being read; no key,
// fingerprint or word about signatures reaches the participant's screens; leaving,
// removing and handing over ask first. axe-core checks each new screen at 320 px and
// 1280 px, and the phone screens are saved to docs/screenshots/phone-*.png.

import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { person } from "./lib/browser.js";
import { agree, joinAs, message, noCryptoWords, publicKey, putOnRota, redeem, say, tapTargets } from "./lib/flows.js";
import { axeAt, startBoth, stopBoth } from "./lib/harness.js";
import { REPO } from "./lib/server.js";

const SHOTS = join(REPO, "docs/screenshots");
export const PHONE = { width: 375, height: 740 };

let server;
let browser;

before(async () => {
  await mkdir(SHOTS, { recursive: true });
  ({ server, browser } = await startBoth());
});

after(() => stopBoth({ server, browser }));

/** A person on a phone: touch, a mobile viewport, their own key. */
async function phonePerson(name) {
  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1, hasTouch: true, isMobile: true, locale: "en-GB" });
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push(`${name}: page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") {
      problems.push(`${name}: console: ${msg.text()}`);
    }
  });
  return { name, context, page, problems };
}

/** Whether the element is shown, wholly inside the viewport, and not covered at its centre. */
function onScreen(page, selector) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    if (!el) {
      return `${sel} is missing`;
    }
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) {
      return `${sel} is not shown`;
    }
    if (r.top < 0 || r.left < 0 || r.bottom > innerHeight || r.right > innerWidth) {
      return `${sel} is outside the screen (${Math.round(r.top)}..${Math.round(r.bottom)} of ${innerHeight})`;
    }
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    if (!hit || !(hit === el || el.contains(hit))) {
      return `${sel} is covered by ${hit?.id || hit?.className || hit?.tagName}`;
    }
    return "ok";
  }, selector);
}

/** Quick exit and "I need support now" are on screen, at the top and after scrolling to
 * the end; and every tap target is big enough. */
async function helpInReach(page, step) {
  await tapTargets(page, step);
  for (const where of ["top", "bottom"]) {
    await page.evaluate((w) => globalThis.scrollTo(0, w === "top" ? 0 : document.documentElement.scrollHeight), where);
    for (const sel of ["#quick-exit", "#support-now"]) {
      assert.equal(await onScreen(page, sel), "ok", `${step} (scrolled to the ${where}): ${sel}`);
      const box = await page.locator(sel).boundingBox();
      assert.ok(box.width >= 44 && box.height >= 44, `${step}: ${sel} is at least 44 × 44 px (${box.width} × ${box.height})`);
    }
  }
}

/** axe-core at 320 px and 1280 px (serious and critical problems), then back to the phone. */

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `phone-${name}.png`), animations: "disabled", caret: "hide" });
}

test("on a phone, help stays in reach, private messages are seen when they come, and no crypto words are shown", { timeout: 240_000 }, async (t) => {
  const origin = new URL(server.url).origin;
  const supervisor = await person(browser, "supervisor", { permissions: ["notifications"], origin });
  const facilitator = await person(browser, "facilitator");
  const admin = await person(browser, "admin");
  const participant = await phonePerson("participant");
  const everyone = [supervisor, facilitator, admin, participant];
  t.after(() => {
    const problems = everyone.flatMap((x) => x.problems);
    if (problems.length) {
      t.diagnostic(problems.join("\n"));
    }
  });
  const sup = supervisor.page;
  const fac = facilitator.page;
  const p = participant.page;
  const axeFailures = [];

  await redeem(sup, server.links.supervisor);
  const supervisorKey = await publicKey(sup);
  await sup.getByRole("button", { name: "Open the supervisor console" }).click();
  await sup.locator("#supervisor-name").fill("Sam");
  await redeem(fac, server.links.facilitator);
  await joinAs(fac, "Jo");
  await agree(fac);

  // The link opens the join screen: the top bar is there already.
  await p.goto(server.links.participant);
  await p.getByRole("heading", { name: /Join the group/ }).waitFor();
  await p.locator("#join-name").fill("River");
  await helpInReach(p, "join");
  await noCryptoWords(p, "join");
  await shot(p, "join");
  await axeAt(p, "join", axeFailures);

  // Outside a group, "I need support now" opens the helplines: one sheet, big targets.
  await p.locator("#support-now").tap();
  await p.locator("#helplines").waitFor();
  await helpInReach(p, "helplines");
  for (const link of await p.locator("#helplines-list a").all()) {
    const box = await link.boundingBox();
    assert.ok(box.height >= 44 && box.width >= 44, `the helpline link ${await link.textContent()} is at least 44 × 44 px`);
  }
  assert.match(await p.locator("#helplines-list a").first().getAttribute("href"), /^tel:/);
  // "text SHOUT to 85258" is a tappable text message, the word filled in.
  assert.equal(await p.locator("#helplines-list a", { hasText: "Text SHOUT to 85258" }).getAttribute("href"), "sms:85258?body=SHOUT");
  await shot(p, "helplines");
  await axeAt(p, "helplines", axeFailures);
  // "Cover your tracks", beside Quick exit, says what Quick exit does and what it can't.
  await p.locator("#helplines-close").tap();
  await p.locator("#tracks-toggle").tap();
  await p.getByRole("heading", { name: "Cover your tracks" }).waitFor();
  assert.equal(await onScreen(p, "#tracks-title"), "ok", "the cover-your-tracks note is on screen");
  await p.locator("#helplines-close").tap();
  await p.locator("#helplines").waitFor({ state: "hidden" });

  await p.getByRole("button", { name: "Join", exact: true }).tap();
  await p.getByRole("heading", { name: "The group agreement" }).waitFor();
  await helpInReach(p, "agreement");
  await noCryptoWords(p, "agreement");
  await shot(p, "agreement");
  await axeAt(p, "agreement", axeFailures);
  await p.locator("#agreement-accept").tap();

  // The waiting room, with nobody on call: it says what the button does now.
  await p.getByRole("heading", { name: "A facilitator will let you in soon" }).waitFor();
  await p.locator("#coverage-line", { hasText: "No supervisor is on call" }).waitFor();
  const waitingWords = await p.locator("#waiting-support-line").textContent();
  assert.match(waitingWords, /No supervisor is on call right now/);
  assert.doesNotMatch(waitingWords, /asks the supervisor on call/);
  await helpInReach(p, "waiting");
  await noCryptoWords(p, "waiting");
  await shot(p, "waiting");
  await axeAt(p, "waiting", axeFailures);

  // Now a supervisor goes on call; the room hears it.
  await redeem(admin.page, server.links.admin);
  await putOnRota(admin.page, supervisorKey);
  await p.locator("#coverage-line", { hasText: "A supervisor is on call" }).waitFor();
  assert.match(await p.locator("#waiting-support-line").textContent(), /asks the supervisor on call/);

  // Let in. The conversation fills the screen; the message box stays small.
  await fac.locator("#waiting-list li", { hasText: "River" }).getByRole("button", { name: "Let in" }).click();
  await p.locator("#composer-input:not([disabled])").waitFor();
  for (let i = 1; i <= 15; i += 1) {
    await say(fac, `Message ${i} from Jo: there's no rush, take your time.`);
  }
  await message(p, "Message 15 from Jo").waitFor();
  await say(p, "Hi, I'm River. First time here.");
  await message(fac, "I'm River").waitFor();
  // Typed as phones type it, the risk phrase still reaches the facilitators, with a
  // chime; River's message is delivered as written.
  const chimesBefore = await fac.evaluate(() => Number(document.querySelector("#facilitator-console").dataset.chimes ?? 0));
  await say(p, "Some days I just can’t go on.");
  await fac.locator("#staff-list li", { hasText: "may show someone at risk" }).waitFor();
  await fac.waitForFunction((n) => Number(document.querySelector("#facilitator-console").dataset.chimes) > n, chimesBefore);
  await message(fac, "Some days I just can’t go on.").waitFor();
  await helpInReach(p, "room, after 15 messages");
  const composerBox = await p.locator("#composer").boundingBox();
  assert.ok(composerBox.height < PHONE.height / 6, `the message box takes less than a sixth of the screen (${composerBox.height} px)`);
  // Trust by exception: verified messages look ordinary, and say who wrote them plainly.
  const fromJo = message(p, "Message 15 from Jo");
  assert.equal(await fromJo.getAttribute("data-verified"), "true", "this browser verified it");
  assert.equal(await fromJo.locator(".msg-head .visually-hidden").textContent(), "Jo, facilitator: ");
  await noCryptoWords(p, "room");
  await shot(p, "room");
  await axeAt(p, "room", axeFailures);

  // Flagging a message: the form has the screen; the message box steps aside.
  const fromJoItem = message(p, "Message 15 from Jo");
  await fromJoItem.getByRole("button", { name: /Options/ }).tap();
  await fromJoItem.getByRole("button", { name: "Flag this message" }).tap();
  await fromJoItem.locator(".flag-form").waitFor();
  assert.equal(await p.locator("#composer").isVisible(), false, "no message box inside the flag form");
  await helpInReach(p, "flag form");
  await fromJoItem.getByRole("button", { name: "Cancel" }).tap();
  await p.locator("#composer").waitFor();

  // Withdrawing one's own message asks first; the group sees it withdrawn, the
  // facilitators keep the text (a signed retraction).
  await say(p, "Sorry, I shouldn't have said that last bit.");
  const mine = message(p, "I shouldn't have said that");
  await mine.getByRole("button", { name: /Options/ }).waitFor();
  await mine.getByRole("button", { name: /Options/ }).tap();
  await mine.getByRole("button", { name: "Withdraw my message" }).tap();
  await mine.locator(".confirm", { hasText: "Withdraw this message?" }).waitFor();
  await mine.getByRole("button", { name: "Keep it" }).tap();
  assert.equal(await mine.locator(".confirm").count(), 0, "kept");
  await mine.getByRole("button", { name: /Options/ }).tap();
  await mine.getByRole("button", { name: "Withdraw my message" }).tap();
  await mine.getByRole("button", { name: "Yes, withdraw it" }).tap();
  await p.locator("#message-list .msg-redaction", { hasText: "You withdrew this message." }).waitFor();
  assert.equal(await message(p, "I shouldn't have said that").count(), 0, "the text is gone from the writer's screen too");
  await fac.locator("#message-list .msg-control", { hasText: "River withdrew their message." }).waitFor();
  await message(fac, "I shouldn't have said that").locator(".msg-redaction", { hasText: "River withdrew this message. Only facilitators still see it" }).waitFor();

  // People are a sheet; the leave button asks first.
  await p.locator("#sheet-people").tap();
  await p.locator("#members-panel").waitFor();
  assert.equal(await onScreen(p, "#member-list"), "ok", "the people sheet is on screen");
  await helpInReach(p, "people");
  await noCryptoWords(p, "people");
  await shot(p, "people");
  await axeAt(p, "people", axeFailures);
  await p.locator("#members-panel [data-close-sheet]").tap();
  await p.locator("#leave-group").tap();
  await p.getByRole("button", { name: "Yes, leave the group" }).waitFor();
  await p.getByRole("button", { name: "Stay" }).tap();
  assert.equal(await p.locator("#leave-confirm").isVisible(), false);
  assert.equal(await p.locator("#view-group").isVisible(), true, "still in the group");

  // The facilitator: no hand over or co-facilitator for an anonymous participant;
  // removing asks first, and "Cancel" sends nothing.
  const row = fac.locator("#member-list li", { hasText: "River" });
  await row.getByRole("button", { name: "Actions for River" }).click();
  assert.equal(await row.getByRole("button", { name: "Hand over the lead" }).count(), 0, "no hand over to a participant");
  assert.equal(await row.getByRole("button", { name: "Make co-facilitator" }).count(), 0, "no co-facilitator role for a participant");
  await row.getByLabel("For good").check();
  await row.getByRole("button", { name: "Remove", exact: true }).click();
  await row.locator(".confirm", { hasText: "Remove River from the group for good?" }).waitFor();
  await row.getByRole("button", { name: "Cancel" }).click();
  assert.equal(await row.locator(".confirm").first().isVisible(), false);
  // A mute can be undone at once.
  await row.getByRole("button", { name: "Mute", exact: true }).click();
  await p.locator("#message-list .msg-control", { hasText: "Jo muted you" }).waitFor();
  await row.getByRole("button", { name: "Undo" }).click();
  await p.locator("#message-list .msg-control", { hasText: "Jo unmuted you" }).waitFor();

  // The facilitator checks in: told within the screen, tap to open.
  await row.getByRole("button", { name: "Check in privately" }).click();
  await fac.locator("#private-panel").waitFor();
  await fac.locator("#private-input").fill("Hi River, just checking in. How are you doing?");
  await fac.locator("#private-input").press("Enter");
  const alertBox = p.locator("#private-alert");
  await alertBox.locator("#private-alert-open", { hasText: /Jo, a facilitator,/ }).waitFor();
  assert.equal(await onScreen(p, "#private-alert-open"), "ok", "the check-in notice is on screen");
  await p.locator("#private-unread", { hasText: "new" }).waitFor();
  assert.match(await p.title(), /^\(\d\) peerhub$/, "the tab title counts unread private messages");
  await shot(p, "private-notice");
  await p.locator("#private-alert-open").tap();
  const jo = p.locator("#private-logs li", { hasText: "just checking in" });
  await jo.waitFor();
  assert.equal(await onScreen(p, "#private-logs ol:not([hidden]) > li:last-child"), "ok", "the check-in message is on screen");
  assert.equal(await p.title(), "peerhub", "read: the tab title is plain again");
  await p.locator("#private-input").fill("Thanks Jo, it's been a hard week.");
  await p.locator("#private-input").press("Enter");
  await fac.locator("#private-logs li", { hasText: "hard week" }).waitFor();
  await helpInReach(p, "private");
  await noCryptoWords(p, "private");
  await shot(p, "private");
  await axeAt(p, "private", axeFailures);

  // "I need support now" from inside the private thread: the form is a sheet.
  await p.locator("#support-now").tap();
  await p.getByRole("heading", { name: "Ask for support now" }).waitFor();
  await helpInReach(p, "support");
  await noCryptoWords(p, "support");
  await shot(p, "support");
  await axeAt(p, "support", axeFailures);
  await p.getByRole("button", { name: "Ask for support" }).tap();
  await p.locator("#support-result", { hasText: "Your request for support has been sent" }).waitFor();
  await p.locator("#support-close").tap();

  // The supervisor writes while River reads Jo's thread: the thread stays, the notice comes.
  const card = sup.locator("#queue-list > li").first();
  await card.getByRole("button", { name: "Acknowledge: I'll take it" }).click();
  // Issue 15: the supervisor writes on the escalation's line, without joining the group.
  await card.getByRole("button", { name: "Write privately to the person" }).click();
  await card.getByLabel("Your message").fill("Hi River, I'm Sam, a supervisor. I'm here now.");
  await card.getByRole("button", { name: "Send privately" }).click();
  await alertBox.locator("#private-alert-open", { hasText: "A supervisor has written to you privately" }).waitFor();
  assert.equal(await onScreen(p, "#private-alert-open"), "ok", "the supervisor's notice is on screen when it arrives");
  assert.match(await p.locator("#private-title").textContent(), /Jo/, "the open thread is not taken over");
  await helpInReach(p, "supervisor's notice");
  await shot(p, "supervisor-notice");
  await axeAt(p, "supervisor's notice", axeFailures);
  await p.locator("#private-alert-open").tap();
  await p.locator("#private-title", { hasText: "A supervisor" }).waitFor();
  assert.equal(await onScreen(p, "#private-logs ol:not([hidden]) > li:last-child"), "ok", "the supervisor's message is on screen");
  assert.match(await p.locator("#private-logs ol:not([hidden]) > li:last-child").textContent(), /I'm Sam, a supervisor/);
  await noCryptoWords(p, "supervisor's thread");
  // River answers on the line; Sam reads it in the console, still outside the group.
  await p.locator("#private-input").fill("Thank you. I'd like that.");
  await p.locator("#private-input").press("Enter");
  await card.locator(".esc-line li", { hasText: "I'd like that" }).waitFor();
  await p.locator("#private-close").tap();

  // Sam joins the group openly (the card's "Join the group"): staff in the group
  // can be handed the lead, after a confirmation that says what it means;
  // "Cancel" changes nothing.
  await card.getByRole("button", { name: "Join the group" }).click();
  const samRow = fac.locator("#member-list li", { hasText: "Sam" });
  await samRow.getByRole("button", { name: "Actions for Sam" }).click();
  await samRow.getByRole("button", { name: "Hand over the lead" }).click();
  await samRow.locator(".confirm", { hasText: "Hand the lead over to Sam?" }).waitFor();
  await samRow.getByRole("button", { name: "Cancel" }).click();
  assert.equal(await fac.locator("#facilitator-console").isVisible(), true, "Jo still leads");
  await samRow.getByRole("button", { name: "Hand over the lead" }).click();
  await samRow.getByRole("button", { name: "Yes, hand over" }).click();
  await p.locator("#message-list .msg-control", { hasText: "Jo handed the lead over to Sam." }).waitFor();

  // The session ends: said once; no "Join the next session" with no time set.
  await fac.getByRole("button", { name: "End the session" }).click();
  await fac.getByRole("button", { name: "Yes, end the session" }).click();
  await p.getByRole("heading", { name: "The session has ended" }).waitFor();
  const ended = await p.evaluate(() => document.body.innerText.match(/The session has ended/gi)?.length ?? 0);
  assert.equal(ended, 1, "\"The session has ended\" is said once");
  assert.equal(await p.getByRole("button", { name: "Join the next session" }).count(), 0);
  await helpInReach(p, "dismissed");
  await noCryptoWords(p, "dismissed");
  await shot(p, "dismissed");
  await axeAt(p, "dismissed", axeFailures);

  // Back to the start and in again: the name is remembered for this group.
  await p.getByRole("button", { name: "Back to the start" }).tap();
  await p.getByRole("heading", { name: "Welcome" }).waitFor();
  await noCryptoWords(p, "start");
  // Their groups are listed for them (each has its own key, issue 14), with the way to
  // leave nothing behind on a shared device right below.
  await p.locator("#my-groups-list li", { hasText: "demo, as River" }).waitFor();
  await p.getByRole("button", { name: "Forget this device…" }).first().waitFor();
  await p.goto(server.links.participant);
  await p.getByRole("heading", { name: /Join the group/ }).waitFor();
  await p.locator("#join-name[value], #join-name").first().waitFor();
  await p.waitForFunction(() => document.querySelector("#join-name").value === "River");

  // Quick exit works by a tap.
  await p.locator("#quick-exit").tap();
  await p.waitForURL(/exit\.html$/);

  assert.deepEqual(axeFailures, [], "axe-core finds nothing serious at 320 px or 1280 px");
  assert.deepEqual(everyone.flatMap((x) => x.problems), [], "no page errors");
});

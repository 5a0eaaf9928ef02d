// Issue 15, "Names for staff": the admin picks rota people from a list of staff who
// have redeemed invites, by name. The protocol took a name at redeem, but the web
// client never asked for one, so the picker said "Unnamed supervisor (key …)". A
// staff invite's link now says it is for staff (&staff=1) and the client asks the
// name colleagues will know the person by before redeeming: a name the server would
// refuse is refused before the invite is spent; "Not now" leaves the invite unspent;
// the admin's picker then shows the name and no key. axe-core at 320 and 1280 px.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { person } from "./lib/browser.js";
import { publicKey, putOnRota, redeem } from "./lib/flows.js";
import { axeAt, startBoth, stopBoth } from "./lib/harness.js";
import { REPO } from "./lib/server.js";

const PHONE = { width: 375, height: 740 };

function onScreen(page, selector) {
  return page.evaluate((sel) => {
    const r = document.querySelector(sel)?.getBoundingClientRect();
    return Boolean(r && r.height > 0 && r.top >= 0 && r.bottom <= innerHeight && r.left >= 0 && r.right <= innerWidth);
  }, selector);
}

let server;
let browser;

before(async () => {
  ({ server, browser } = await startBoth());
});

after(() => stopBoth({ server, browser }));

/** The admin makes a supervisor invite in the form and returns its link. */
async function supervisorInvite(adminPage) {
  await adminPage.locator("#invite-role").selectOption("supervisor");
  await adminPage.getByRole("button", { name: "Make the invite link" }).click();
  const code = adminPage.locator("#invite-result code");
  await code.waitFor();
  const link = (await code.textContent()).trim();
  await adminPage.locator("#invite-result").evaluate((el) => el.replaceChildren());
  return link;
}

test("a staff invite asks the name colleagues know them by, and the rota picker shows it", { timeout: 120_000 }, async () => {
  const admin = await person(browser, "admin");
  const a = admin.page;
  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1, hasTouch: true, isMobile: true, locale: "en-GB" });
  context.setDefaultTimeout(15_000);
  const s = await context.newPage();
  const problems = [];
  s.on("pageerror", (err) => problems.push(`supervisor: ${err.message}`));
  const axeFailures = [];

  // The printed first-admin link is a staff link too.
  assert.match(server.links.admin, /#invite=[^&]+&staff=1$/);
  await redeem(a, server.links.admin, { name: "Ada Okonjo" });

  const link = await supervisorInvite(a);
  assert.match(link, /#invite=[^&]+&staff=1$/, "a supervisor invite's link says it is for staff");

  // On a phone: asked for a name before anything is redeemed.
  await s.goto(link);
  const card = s.locator("#staff-name");
  await card.waitFor();
  assert.equal(await s.evaluate(() => document.activeElement?.id), "staff-name-title", "focus moves to the question");
  assert.equal(await onScreen(s, "#quick-exit"), true, "quick exit stays in view");
  assert.equal(await onScreen(s, "#staff-name-input"), true, "the question is in view on a phone");
  await s.screenshot({ path: join(REPO, "docs/screenshots/phone-staff-name.png"), animations: "disabled", caret: "hide" });
  await axeAt(s, "staff name", axeFailures);

  // A name the server would refuse is refused here, and the invite is not spent.
  await s.locator("#staff-name-input").fill("Sam the supervisor");
  await s.getByRole("button", { name: "Accept the invite" }).tap();
  await s.locator("#staff-name-error:not([hidden])").waitFor();
  assert.equal(await s.locator("#app-notice-text", { hasText: "Invite accepted" }).count(), 0);

  // "Not now" leaves the invite unspent and the address bar without it.
  await s.getByRole("button", { name: "Not now" }).tap();
  await s.locator("#app-notice-text", { hasText: "The invite was not used" }).waitFor();
  assert.equal(await card.isVisible(), false);
  assert.doesNotMatch(s.url(), /invite=/, "the token left the address bar");

  // Opening the link again asks again; a good name redeems it.
  await s.goto("about:blank");
  await s.goto(link);
  await card.waitFor();
  await s.locator("#staff-name-input").fill("  Sam   Okafor ");
  await s.getByRole("button", { name: "Accept the invite" }).tap();
  await s.locator("#app-notice-text", { hasText: "Invite accepted" }).waitFor();
  assert.equal(await card.isVisible(), false);
  const supKey = await publicKey(s);

  // The admin's rota picker names Sam (normalised), with no key in the option.
  await a.locator("#rota-reload").click();
  const option = a.locator("#rota-pick option", { hasText: "Sam Okafor" });
  await option.waitFor({ state: "attached" });
  assert.equal(await option.getAttribute("value"), supKey);
  assert.doesNotMatch(await option.textContent(), /key|Unnamed/);

  // On the rota with no push subscription, the admin's warning names Sam too
  // (it showed the first twelve characters of the key).
  await putOnRota(a, supKey);
  const reach = a.locator("#rota-reach", { hasText: "Nobody can reach this supervisor" });
  await reach.waitFor();
  assert.match(await reach.textContent(), /: Sam Okafor\. Ask them/);

  // A second staff invite on the same device offers the name given last time.
  const again = await supervisorInvite(a);
  await s.goto(again);
  await card.waitFor();
  assert.equal(await s.locator("#staff-name-input").inputValue(), "Sam Okafor");
  await s.getByRole("button", { name: "Not now" }).tap();

  // A member invite's link has no staff hint, and nobody is asked for a name.
  assert.doesNotMatch(server.links.participant, /staff=/);
  await s.goto(server.links.participant);
  await s.locator("#join-name").waitFor();
  assert.equal(await card.isVisible(), false);

  assert.deepEqual(axeFailures, []);
  assert.deepEqual([...problems, ...admin.problems], []);
  await context.close();
});

// Clearing the waiting room from the facilitator console: two people wait, the
// facilitator clears it after a plain confirmation, both are told kindly (with the
// helplines and a way to knock again), and the console's waiting room is empty.

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

test("a facilitator clears the waiting room and the people waiting are told", { timeout: 120_000 }, async () => {
  const facilitator = await person(browser, "facilitator");
  const ash = await person(browser, "ash");
  const bea = await person(browser, "bea");
  const fac = facilitator.page;

  await redeem(fac, server.links.facilitator);
  await joinAs(fac, "Jo");
  await agree(fac);
  await fac.locator("#facilitator-console").waitFor();

  for (const [who, name] of [
    [ash, "Ash"],
    [bea, "Bea"],
  ]) {
    await who.page.goto(server.links.participant);
    await joinAs(who.page, name);
    await agree(who.page);
    await who.page.getByRole("heading", { name: "A facilitator will let you in soon" }).waitFor();
    await fac.locator("#waiting-list li", { hasText: name }).waitFor();
  }
  await fac.locator("#waiting-count", { hasText: "2" }).waitFor();

  await fac.getByRole("button", { name: "Clear the waiting room…" }).click();
  await fac.getByRole("button", { name: "Clear the waiting room", exact: true }).click();
  await fac.locator("#waiting-clear-status", { hasText: "The waiting room has been cleared." }).waitFor();
  await fac.locator("#waiting-count", { hasText: "0" }).waitFor();
  await fac.locator("#waiting-empty:not([hidden])").waitFor();

  for (const who of [ash, bea]) {
    await who.page.locator("#dismissed-title", { hasText: "The waiting room was cleared" }).waitFor();
    await who.page.locator("#dismissed-detail", { hasText: "You can knock again" }).waitFor();
  }
});

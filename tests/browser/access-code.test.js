// Issue 14, item 7: an admin creates a group with an access code in the web client;
// a person is asked for the code and comes in with it; once the hub has stopped, no
// file in its data folder holds the code (the client sends it beside the signed
// request, and the hub keeps only a keyed hash).

import assert from "node:assert/strict";
import { readdir, readFile, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";

import { person } from "./lib/browser.js";
import { joinAs, redeem } from "./lib/flows.js";
import { startBoth, stopBoth } from "./lib/harness.js";

const CODE = "Larkspur-91d4-Fennick";

let server;
let browser;

before(async () => {
  ({ server, browser } = await startBoth());
});

after(() => stopBoth({ server, browser }));

async function filesUnder(dir) {
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      out.push(...(await filesUnder(path)));
    } else if (entry.isFile()) {
      out.push(path);
    }
  }
  return out;
}

test("a group made with an access code in the client keeps no copy of it", { timeout: 120_000 }, async () => {
  const admin = await person(browser, "admin");
  const visitor = await person(browser, "visitor");
  const a = admin.page;
  await redeem(a, server.links.admin);
  await a.locator("#create-id").fill("coded-circle");
  await a.locator("#create-title").fill("Coded circle");
  await a.locator("#create-code").fill(CODE);
  await a.getByRole("button", { name: "Create group" }).click();
  const link = await a.locator(".share-link code").textContent();

  const p = visitor.page;
  await p.goto(link);
  await joinAs(p, "River");
  await p.locator("#join-code-field").waitFor();
  await p.locator("#join-code").fill("not-the-code");
  await p.getByRole("button", { name: "Join", exact: true }).click();
  await p.locator("#join-code-error:not([hidden])").waitFor();
  await p.locator("#join-code").fill(CODE);
  await p.getByRole("button", { name: "Join", exact: true }).click();
  await p.getByRole("heading", { name: "A facilitator will let you in soon" }).waitFor();

  const data = server.dataDir;
  await server.stop({ keepData: true });
  const holding = [];
  for (const file of await filesUnder(data)) {
    if ((await readFile(file)).includes(Buffer.from(CODE))) {
      holding.push(file);
    }
  }
  await rm(dirname(data), { recursive: true, force: true });
  assert.deepEqual(holding, [], "the access code is in the data folder");
  assert.deepEqual([admin, visitor].flatMap((x) => x.problems), []);
});

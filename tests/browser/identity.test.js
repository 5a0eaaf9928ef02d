// Issue 14, items 1 (client), 3 and 9: unlinkable keys, a device that forgets, and
// counters and signed times remembered across reloads.
//
// - Two groups joined from one browser use unrelated keys: read from the hub's side,
//   in the `joined` frames another member receives; the start screen lists both groups
//   with the name used in each.
// - "Forget this device" leaves no IndexedDB database, localStorage, sessionStorage,
//   cache or service worker, and the next person at the browser cannot read the
//   previous person's private check-in; quick exit with its option forgets too; a
//   session-only key is gone once its tab is closed.
// - After a reload, a message the hub sends again (an old envelope at a new seq) and
//   one whose signed time is far from the hub's are marked in plain words; the time
//   shown is the signed one.
// - axe-core at 320 and 1280 px on the new screens; their tap targets are 44 px.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { person } from "./lib/browser.js";
import { agree, expectVerified, joinAs, message, redeem, say, tapTargets } from "./lib/flows.js";
import { axeAt, startBoth, stopBoth } from "./lib/harness.js";

let server;
let browser;

before(async () => {
  ({ server, browser } = await startBoth());
});

after(() => stopBoth({ server, browser }));

/** axe-core at both widths, and tap targets checked at each. */
function axeAndTaps(page, step, failures) {
  return axeAt(page, step, failures, { height: 800, each: (label) => tapTargets(page, label) });
}

/** Everything this origin keeps in the browser, as counts and names. */
function storageLeft(page) {
  return page.evaluate(async () => ({
    databases: (await indexedDB.databases()).map((d) => d.name),
    localStorage: localStorage.length,
    sessionStorage: sessionStorage.length,
    caches: (await caches.keys()).length,
    workers: (await navigator.serviceWorker.getRegistrations()).length,
  }));
}

const NOTHING = { databases: [], localStorage: 0, sessionStorage: 0, caches: 0, workers: 0 };

/** One value of the client's store (IndexedDB "peerhub", object store "kv"), or null. */
function storeValue(page, key) {
  return page.evaluate(
    (k) =>
      new Promise((resolve) => {
        const open = indexedDB.open("peerhub");
        open.onsuccess = () => {
          const db = open.result;
          if (!db.objectStoreNames.contains("kv")) {
            db.close();
            resolve(null);
            return;
          }
          const get = db.transaction("kv").objectStore("kv").get(k);
          get.onsuccess = () => {
            const v = get.result;
            db.close();
            // Key pairs are CryptoKeys: report only what can be compared.
            resolve(v === undefined ? null : JSON.parse(JSON.stringify(v, (name, x) => (x instanceof CryptoKey ? "CryptoKey" : x))));
          };
          get.onerror = () => resolve(null);
        };
        open.onerror = () => resolve(null);
      }),
    key,
  );
}

/** An admin makes a drop-in group with no waiting room and no agreement; returns its link. */
async function makeGroup(admin, id, title) {
  await admin.locator("#create-id").fill(id);
  await admin.locator("#create-title").fill(title);
  await admin.locator("#create-waiting").uncheck();
  await admin.getByRole("button", { name: "Create group" }).click();
  const link = (await admin.locator("#create-result .share-link code").textContent()).trim();
  assert.match(link, new RegExp(`#group=${id}$`));
  return link;
}

async function enterRoom(page, link, name) {
  await page.goto(link);
  await joinAs(page, name);
  await page.locator("#composer-input:not([disabled])").waitFor();
}

let adminPage = null;
const links = {};

test("two groups joined from one browser show unrelated keys to the hub, and the start screen lists both", { timeout: 120_000 }, async () => {
  const admin = await person(browser, "admin");
  const visitor = await person(browser, "visitor");
  const a = admin.page;
  adminPage = a;
  // What the hub tells the admin about members, read off the admin's socket.
  const membersSeen = [];
  await a.routeWebSocket(/\/ws$/, (ws) => {
    const hub = ws.connectToServer();
    ws.onMessage((m) => hub.send(m));
    hub.onMessage((m) => {
      const text = String(m);
      try {
        const frame = JSON.parse(text);
        if (frame.type === "joined" && Array.isArray(frame.members)) {
          for (const member of frame.members) {
            membersSeen.push({ group: frame.group?.id, name: member.name, key: member.key });
          }
        }
        if (frame.type === "presence" && frame.member) {
          membersSeen.push({ group: frame.group, name: frame.member.name, key: frame.member.key });
        }
      } catch {
        // not JSON: pass it on
      }
      ws.send(text);
    });
  });
  await redeem(a, server.links.admin);
  links.one = await makeGroup(a, "circle-one", "Circle one");
  links.two = await makeGroup(a, "circle-two", "Circle two");

  const v = visitor.page;
  await v.goto(server.url);
  await v.locator("#start-title").waitFor();
  const homeKey = (await v.locator("#key-full").textContent()).trim();
  await enterRoom(v, links.one, "River");
  await enterRoom(v, links.two, "Sam");

  // The admin joins each group and is told who is in it.
  for (const id of ["circle-one", "circle-two"]) {
    await a.goto(`${server.url}#group=${id}`);
    await joinAs(a, "Ada");
    await a.locator("#composer-input:not([disabled])").waitFor();
  }
  const keyOf = (group, name) => membersSeen.find((m) => m.group === group && m.name === name)?.key;
  const river = keyOf("circle-one", "River");
  const sam = keyOf("circle-two", "Sam");
  assert.ok(river && sam, `the hub showed both members: ${JSON.stringify(membersSeen.map((m) => [m.group, m.name]))}`);
  assert.notEqual(river, sam, "River in one group and Sam in another have different keys on the wire");
  assert.notEqual(river, homeKey, "a group's key is not the device's own key");
  assert.notEqual(sam, homeKey, "a group's key is not the device's own key");

  // The person still sees both groups on their own device, each with its name.
  await v.goto(server.url);
  await v.locator("#my-groups:not([hidden])").waitFor();
  const items = await v.locator("#my-groups-list li").allTextContents();
  assert.deepEqual(items.map((t) => t.trim()), ["circle-one, as River", "circle-two, as Sam"]);

  // After a reload, going back to a group uses that group's key again.
  await v.getByRole("button", { name: "circle-one, as River" }).click();
  // The name is read from the device's store after the screen shows: wait for it.
  await v.waitForFunction(() => document.querySelector("#join-name")?.value !== "", null, { timeout: 5_000 }).catch(() => {});
  assert.equal(await v.locator("#join-name").inputValue(), "River", "the name used there is remembered");
  await v.getByRole("button", { name: "Join", exact: true }).click();
  await v.locator("#composer-input:not([disabled])").waitFor();
  await say(v, "Back again.");
  await expectVerified(v, "Back again.");
  membersSeen.length = 0;
  await a.goto(`${server.url}#group=circle-one`);
  await joinAs(a, "Ada");
  await expectVerified(a, "Back again.");
  assert.equal(keyOf("circle-one", "River"), river, "the group's key is the same after a reload");
  assert.deepEqual([admin, visitor].flatMap((x) => x.problems), []);
});

test("forget this device leaves nothing, and the next person cannot read the previous one's check-in", { timeout: 150_000 }, async () => {
  const facilitator = await person(browser, "facilitator");
  const shared = await person(browser, "shared device");
  const fac = facilitator.page;
  const p = shared.page;
  const failures = [];

  await redeem(fac, server.links.facilitator);
  // Staff join with the key their invite bound: no session-only or passphrase choice.
  await fac.locator("#join-name").waitFor();
  assert.equal(await fac.getByLabel("Forget me when I close this tab").isVisible(), false);
  assert.equal(await fac.getByLabel("Lock this group on this device with a passphrase").isVisible(), false);
  await joinAs(fac, "Jo");
  await agree(fac);
  await fac.locator("#facilitator-console").waitFor();

  await p.goto(server.links.participant);
  await joinAs(p, "River");
  await agree(p);
  await fac.locator("#waiting-list li", { hasText: "River" }).getByRole("button", { name: "Let in" }).click();
  await p.locator("#composer-input:not([disabled])").waitFor();

  // A private check-in from the facilitator, read by River.
  const row = fac.locator("#member-list li", { hasText: "River" });
  await row.getByRole("button", { name: "Actions for River" }).click();
  await row.getByRole("button", { name: "Check in privately" }).click();
  await fac.locator("#private-input").fill("River, how did the court date go?");
  await fac.locator("#private-input").press("Enter");
  await p.locator("#private-alert-open").click();
  await p.locator("#private-logs li", { hasText: "court date" }).waitFor();

  // River leaves for the start screen and asks the device to forget.
  await p.goto(server.url);
  await p.locator("#my-groups-list li", { hasText: "demo, as River" }).waitFor();
  await p.getByRole("button", { name: "Forget this device…" }).first().click();
  await p.locator("#forget-confirm:not([hidden])").waitFor();
  await axeAndTaps(p, "forget, confirm", failures);
  await p.getByRole("button", { name: "Yes, forget everything" }).click();
  await p.getByRole("heading", { name: "This device has forgotten everything peerhub kept here" }).waitFor();
  await axeAndTaps(p, "forgotten", failures);
  assert.deepEqual(await storageLeft(p), NOTHING, "nothing is left in the browser");

  // The next person at this browser opens the link: no groups, no names, a new key.
  await p.goto("about:blank");
  await p.goto(server.links.participant);
  await p.locator("#join-name").waitFor();
  assert.equal(await p.locator("#join-name").inputValue(), "", "the previous name is not offered");
  await joinAs(p, "Alex");
  await agree(p);
  await fac.locator("#waiting-list li", { hasText: "Alex" }).getByRole("button", { name: "Let in" }).click();
  await p.locator("#composer-input:not([disabled])").waitFor();
  // Everything the hub would send River's key on joining has had time to arrive.
  await say(p, "Hello, I'm new.");
  await expectVerified(p, "Hello, I'm new.");
  assert.equal(await p.getByText("court date").count(), 0, "the previous person's check-in is not readable");
  await p.goto(server.url);
  await p.locator("#start-title").waitFor();
  const listed = await p.locator("#my-groups-list li").allTextContents();
  assert.ok(!listed.some((t) => t.includes("River")), "River's group is not listed");
  assert.deepEqual(failures, []);
  assert.deepEqual([facilitator, shared].flatMap((x) => x.problems), []);
});

test("quick exit with its option forgets the device; a session-only key is gone with its tab", { timeout: 120_000 }, async () => {
  const leaver = await person(browser, "leaver");
  const p = leaver.page;
  const failures = [];
  await p.goto(server.url);
  await p.locator("#start-title").waitFor();
  await p.getByLabel("Quick exit also forgets this device").check();
  await axeAndTaps(p, "start with forget", failures);
  await enterRoom(p, links.one, "Wren");
  assert.equal((await storeValue(p, "names"))?.["circle-one"], "Wren", "the name is kept until the exit");
  await p.getByRole("button", { name: "Quick exit" }).click();
  await p.waitForURL(/exit\.html$/);
  assert.deepEqual(await storageLeft(p), NOTHING, "quick exit forgot everything");

  // A session-only key: kept in this tab's memory only.
  const tab = await leaver.context.newPage();
  await tab.goto(links.two);
  await tab.locator("#join-name").waitFor();
  await tab.getByLabel("Forget me when I close this tab").check();
  await axeAndTaps(tab, "join with session-only", failures);
  await joinAs(tab, "Kit");
  await tab.locator("#composer-input:not([disabled])").waitFor();
  const groupKeys = (await storeValue(tab, "groupKeys")) ?? {};
  assert.equal(groupKeys["circle-two"], undefined, "no key for the group is stored");
  assert.equal((await storeValue(tab, "names"))?.["circle-two"], undefined, "no name is stored");
  assert.equal((await storeValue(tab, "seen"))?.["circle-two"], undefined, "no counters are stored");
  // Back to the start inside the page (loading a page again would end the key).
  await tab.evaluate(() => {
    location.hash = "";
  });
  await tab.locator("#my-groups-list li", { hasText: "circle-two, as Kit (this tab only)" }).waitFor();
  await tab.close();

  const next = await leaver.context.newPage();
  await next.goto(server.url);
  await next.locator("#start-title").waitFor();
  const listed = await next.locator("#my-groups-list li").allTextContents();
  assert.ok(!listed.some((t) => t.includes("circle-two")), "the session-only group is gone with its tab");
  await next.goto(links.two);
  await next.locator("#join-name").waitFor();
  assert.equal(await next.locator("#join-name").inputValue(), "", "the name is gone with its tab");
  assert.deepEqual(failures, []);
  assert.deepEqual(leaver.problems, []);
});

test("after a reload, a message sent again and a misdated one are marked; the signed time is shown", { timeout: 180_000 }, async () => {
  const writer = await person(browser, "writer");
  const reader = await person(browser, "reader");
  const w = writer.page;
  const r = reader.page;
  const OLD = "Meet me by the library at six";
  const LAST = "Message number 105";
  // Every main-channel event frame the reader's page receives, and what to inject.
  let oldFrame = null;
  let head = 0;
  let toPage = null;
  let misdate = false;
  let signed104 = null;
  await r.routeWebSocket(/\/ws$/, (ws) => {
    const hub = ws.connectToServer();
    toPage = (text) => ws.send(text);
    ws.onMessage((m) => hub.send(m));
    hub.onMessage((m) => {
      let text = String(m);
      try {
        const frame = JSON.parse(text);
        if (frame.type === "event" && frame.env && (frame.channel ?? "main") === "main") {
          head = Math.max(head, frame.seq);
          if (frame.env.payload.includes(OLD)) {
            oldFrame ??= frame;
          }
          if (misdate && frame.env.payload.includes(LAST)) {
            // The hub says it arrived an hour after it was signed.
            text = JSON.stringify({ ...frame, ts: frame.ts + 60 * 60 * 1000 });
          }
          if (misdate && frame.env.payload.includes("Message number 104")) {
            // Three minutes off: within the allowance, so shown as ordinary, and the
            // time shown must be the signed one, not the hub's.
            signed104 = JSON.parse(frame.env.payload).ts;
            text = JSON.stringify({ ...frame, ts: frame.ts + 3 * 60 * 1000 });
          }
        }
        if (frame.type === "joined" && Number.isSafeInteger(frame.head)) {
          head = Math.max(head, frame.head);
        }
      } catch {
        // not JSON: pass it on
      }
      ws.send(text);
    });
  });

  await enterRoom(r, links.one, "Reader");
  await enterRoom(w, links.one, "Writer");
  await say(w, OLD);
  await expectVerified(r, OLD);
  // More than the history a join brings back (100 events), so that after a reload the
  // old message is not in the page's history.
  for (let i = 1; i <= 105; i += 1) {
    await say(w, `Message number ${i}`);
  }
  await expectVerified(r, LAST);
  assert.ok(oldFrame, "the reader saw the old message's frame");

  // Reload: the history no longer holds the old message, and the last one arrives
  // with a hub time an hour after its signed time.
  misdate = true;
  await r.reload();
  await r.locator("#join-name").waitFor();
  await r.getByRole("button", { name: "Join", exact: true }).click();
  await r.locator("#composer-input:not([disabled])").waitFor();
  await message(r, "Message number 104").first().waitFor();
  assert.equal(await message(r, OLD).count(), 0, "the old message is outside the history brought back");

  // The misdated one is marked in plain words, without its author.
  const last = r.locator('#message-list > li[data-verified="false"]', { hasText: "very different time" });
  await last.waitFor();
  assert.equal(await message(r, LAST).locator(".msg-author", { hasText: "Writer" }).count(), 0);

  // The hub sends the old message again as if new: marked.
  toPage(JSON.stringify({ ...oldFrame, seq: head + 1, ts: Date.now() }));
  const again = r.locator('#message-list > li[data-verified="false"]', { hasText: "old message sent again" }).filter({ hasText: "came after newer messages" });
  await again.waitFor();

  // A message a little off still looks ordinary, with the time its writer signed.
  await expectVerified(r, "Message number 104");
  const shown = await message(r, "Message number 104").locator("time").first().getAttribute("datetime");
  assert.equal(shown, new Date(signed104).toISOString(), "the time shown is the signed one");
  assert.deepEqual([writer, reader].flatMap((x) => x.problems), []);
});

test("a device from before per-group keys keeps its key for its old groups and makes new keys for new ones", { timeout: 120_000 }, async () => {
  const old = await person(browser, "one-key device");
  const p = old.page;
  // What this browser sends: which key signs each join.
  const joins = [];
  await p.routeWebSocket(/\/ws$/, (ws) => {
    const hub = ws.connectToServer();
    ws.onMessage((m) => {
      try {
        const frame = JSON.parse(String(m));
        if (frame.type === "join" && frame.env) {
          joins.push({ group: JSON.parse(frame.env.payload).group, key: frame.env.key });
        }
      } catch {
        // not JSON: pass it on
      }
      hub.send(m);
    });
    hub.onMessage((m) => ws.send(m));
  });
  // The store as the one-key client left it: "identity" and the names it used.
  await p.goto(new URL("exit.html", server.url).href);
  const seeded = await p.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const open = indexedDB.open("peerhub", 1);
        open.onupgradeneeded = () => open.result.createObjectStore("kv");
        open.onerror = () => reject(open.error);
        open.onsuccess = async () => {
          const db = open.result;
          const keyPair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
          const raw = new Uint8Array(await crypto.subtle.exportKey("raw", keyPair.publicKey));
          const publicKey = btoa(String.fromCharCode(...raw)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
          const tx = db.transaction("kv", "readwrite");
          tx.objectStore("kv").put({ version: 1, keyPair, publicKey, createdAt: Date.now() }, "identity");
          tx.objectStore("kv").put({ "circle-one": "Robin" }, "names");
          tx.oncomplete = () => {
            db.close();
            resolve(publicKey);
          };
          tx.onerror = () => reject(tx.error);
        };
      }),
  );
  await p.goto(server.url);
  await p.locator("#my-groups-list li", { hasText: "circle-one, as Robin" }).waitFor();
  assert.equal((await p.locator("#key-full").textContent()).trim(), seeded, "the old key stays the device's own key");
  await p.getByRole("button", { name: "circle-one, as Robin" }).click();
  await p.getByRole("button", { name: "Join", exact: true }).click();
  await p.locator("#composer-input:not([disabled])").waitFor();
  await enterRoom(p, links.two, "Robin");
  const keyFor = (group) => joins.find((j) => j.group === group)?.key;
  assert.equal(keyFor("circle-one"), seeded, "the old group keeps the old key");
  assert.ok(keyFor("circle-two") && keyFor("circle-two") !== seeded, "a new group gets a new key");
  assert.deepEqual(old.problems, []);
});

test("a group locked with a passphrase keeps only a wrapped key, and asks for it after a reload", { timeout: 120_000 }, async () => {
  const locker = await person(browser, "locker");
  const p = locker.page;
  const failures = [];
  const joins = [];
  await p.routeWebSocket(/\/ws$/, (ws) => {
    const hub = ws.connectToServer();
    ws.onMessage((m) => {
      try {
        const frame = JSON.parse(String(m));
        if (frame.type === "join" && frame.env) {
          joins.push(frame.env.key);
        }
      } catch {
        // not JSON: pass it on
      }
      hub.send(m);
    });
    hub.onMessage((m) => ws.send(m));
  });
  await p.goto(links.one);
  await p.getByLabel("Lock this group on this device with a passphrase").check();
  await p.getByLabel("Choose a passphrase").fill("short");
  await joinAs(p, "Lark");
  await p.locator("#join-pass-error", { hasText: "at least 8 characters" }).waitFor();
  await p.getByLabel("Choose a passphrase").fill("heron by the weir");
  await axeAndTaps(p, "join with a passphrase", failures);
  await p.getByRole("button", { name: "Join", exact: true }).click();
  await p.locator("#composer-input:not([disabled])").waitFor();
  const stored = (await storeValue(p, "groupKeys"))?.["circle-one"];
  assert.ok(stored?.wrapped, "the group's key is stored wrapped");
  assert.ok(!JSON.stringify(stored).includes("CryptoKey"), "no usable key is stored for the group");
  assert.equal(stored.publicKey, joins.at(-1));

  // After a reload the passphrase is asked for; a wrong one is refused and nothing is sent.
  await p.reload();
  await p.getByLabel("Passphrase for this group").waitFor();
  assert.equal(await p.getByLabel("Lock this group on this device with a passphrase").isVisible(), false);
  const sent = joins.length;
  await p.getByRole("button", { name: "Join", exact: true }).click();
  await p.locator("#join-pass-error", { hasText: "Type the passphrase" }).waitFor();
  await p.getByLabel("Passphrase for this group").fill("heron by the wier");
  await p.getByRole("button", { name: "Join", exact: true }).click();
  await p.locator("#join-pass-error", { hasText: "doesn't open this group" }).waitFor();
  assert.equal(joins.length, sent, "no join is sent without the right passphrase");
  await p.getByLabel("Passphrase for this group").fill("heron by the weir");
  await p.getByRole("button", { name: "Join", exact: true }).click();
  await p.locator("#composer-input:not([disabled])").waitFor();
  assert.equal(joins.at(-1), stored.publicKey, "the same key, opened with the passphrase");
  assert.deepEqual(failures, []);
  assert.deepEqual(locker.problems, []);
});

// The installable staff console (issue 16): the console registers its service
// worker and subscribes to Web Push, keeps its state across a reload, shows the
// waiting count in the tab title, and none of it is offered to a participant.
//
// Headless Chromium has no push service offline, so an init script stands in for
// the browser's: `pushManager.subscribe` returns a subscription whose endpoint is a
// local HTTP receiver in this test and whose keys are a real P-256 key pair and 16
// random bytes. The hub then really encrypts and posts its pushes to that receiver.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";

import { launch, person } from "./lib/browser.js";
import { agree, joinAs, publicKey, putOnRota, redeem } from "./lib/flows.js";
import { startServer } from "./lib/server.js";

let server;
let browser;
let pushService;
const pushes = [];

/** Runs in every page of the supervisor's context, before the app. */
function fakePushService(endpoint) {
  const saved = () => {
    const raw = localStorage.getItem("test-push-subscription");
    return raw ? JSON.parse(raw) : null;
  };
  const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const unb64 = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0)).buffer;
  const asSubscription = (s) => ({
    endpoint: s.endpoint,
    expirationTime: null,
    options: { userVisibleOnly: true },
    getKey: (name) => unb64(name === "p256dh" ? s.p256dh : s.auth),
    toJSON: () => ({ endpoint: s.endpoint, keys: { p256dh: s.p256dh, auth: s.auth } }),
    unsubscribe: async () => {
      localStorage.removeItem("test-push-subscription");
      return true;
    },
  });
  PushManager.prototype.getSubscription = async function getSubscription() {
    const s = saved();
    return s ? asSubscription(s) : null;
  };
  PushManager.prototype.subscribe = async function subscribe(options) {
    if (!options?.userVisibleOnly || !options.applicationServerKey) {
      throw new DOMException("userVisibleOnly and applicationServerKey are required", "NotAllowedError");
    }
    const key = new Uint8Array(options.applicationServerKey);
    if (key.length !== 65 || key[0] !== 4) {
      throw new DOMException("the applicationServerKey is not a P-256 point", "InvalidAccessError");
    }
    const pair = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"]);
    const s = {
      endpoint,
      p256dh: b64(await crypto.subtle.exportKey("raw", pair.publicKey)),
      auth: b64(crypto.getRandomValues(new Uint8Array(16))),
      vapid: b64(key),
    };
    localStorage.setItem("test-push-subscription", JSON.stringify(s));
    return asSubscription(s);
  };
}

before(async () => {
  pushService = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      pushes.push({ url: req.url, headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(201).end();
    });
  });
  await new Promise((r) => pushService.listen(0, "127.0.0.1", r));
  server = await startServer();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await new Promise((r) => pushService?.close(r));
});

test("the staff console installs, subscribes, survives a reload and counts what waits in the title", async () => {
  const origin = new URL(server.url).origin;
  const endpoint = `http://127.0.0.1:${pushService.address().port}/push/supervisor-phone`;
  const supervisor = await person(browser, "supervisor", { permissions: ["notifications"], origin });
  const participant = await person(browser, "participant");
  const admin = await person(browser, "admin");
  const facilitator = await person(browser, "facilitator");
  await supervisor.context.addInitScript(fakePushService, endpoint);
  // The alarm repeats every 30 s in use; every 400 ms here, so a test can hear it.
  await supervisor.context.route("**/js/config.js", async (route) => {
    const response = await route.fetch();
    const text = (await response.text()).replace(/ALARM_REPEAT_MS = [\d_]+/, "ALARM_REPEAT_MS = 400");
    await route.fulfill({ response, body: text });
  });
  const sup = supervisor.page;
  const p = participant.page;
  try {
    await redeem(sup, server.links.supervisor);
    const key = await publicKey(sup);
    await sup.getByRole("button", { name: "Open the supervisor console" }).click();
    await sup.getByRole("heading", { name: "Supervisor console" }).waitFor();
    await sup.getByRole("button", { name: "Turn on sound and notifications" }).click();
    await sup.locator("#push-status", { hasText: "This device gets escalation pushes" }).waitFor();

    // The worker is registered (scoped so it controls no page) and the app is installable.
    const registered = await sup.evaluate(async () => {
      const reg = await navigator.serviceWorker.getRegistration("./staff/");
      return { scope: reg?.scope ?? null, script: (reg?.active ?? reg?.installing ?? reg?.waiting)?.scriptURL ?? null };
    });
    assert.equal(registered.scope, `${origin}/staff/`);
    assert.equal(registered.script, `${origin}/staff-sw.js`);
    assert.equal(await sup.locator('link[rel="manifest"]').getAttribute("href"), "staff.webmanifest");
    const manifest = await (await fetch(`${origin}/staff.webmanifest`)).json();
    assert.equal(manifest.display, "standalone");
    // The subscription handed to the hub is the one the (stand-in) push service made,
    // under the hub's VAPID key.
    const saved = await sup.evaluate(() => JSON.parse(localStorage.getItem("test-push-subscription")));
    assert.equal(saved.endpoint, endpoint);
    assert.equal(Buffer.from(saved.vapid, "base64url").length, 65);

    // On the rota: the admin screen does not list them as unreachable.
    await redeem(admin.page, server.links.admin);
    await admin.page.locator("#rota-panel").waitFor();
    await putOnRota(admin.page, key);
    await admin.page.locator("#rota-reach", { hasText: "Everyone on the rota gets pushes on a device." }).waitFor();

    // A participant is never offered the app.
    await p.goto(server.links.participant);
    await joinAs(p, "River");
    await agree(p);
    assert.equal(await p.locator('link[rel="manifest"]').count(), 0, "no manifest for a participant");
    assert.equal(await p.evaluate(async () => (await navigator.serviceWorker.getRegistrations()).length), 0);
    assert.equal(await p.evaluate(() => localStorage.getItem("peerhub.staff")), null);

    // A request for support: the title counts it, and the hub pushed to the endpoint.
    await redeem(facilitator.page, server.links.facilitator);
    await p.getByRole("button", { name: "I need support now" }).first().click();
    await p.getByRole("button", { name: "Ask for support" }).click();
    await p.locator("#support-result", { hasText: "Your request for support has been sent" }).waitFor();
    await sup.waitForFunction(() => document.title === "(1) peerhub");
    // While it waits, the console sounds its alarm again (and says so).
    await sup.locator("#alerts-status", { hasText: /Alarm repeated at .*: 1 waiting/ }).waitFor();
    const deadline = Date.now() + 15_000;
    while (!pushes.some((x) => x.url === "/push/supervisor-phone") && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const push = pushes.find((x) => x.url === "/push/supervisor-phone");
    assert.ok(push, "the hub pushed to the browser's endpoint");
    assert.equal(push.headers["content-encoding"], "aes128gcm");
    assert.match(push.headers.authorization, /^vapid t=[\w-]+\.[\w-]+\.[\w-]+, k=[\w-]+$/);
    assert.ok(!push.body.includes(Buffer.from("River")), "encrypted: no name in the clear");

    // Reload: still the console, sound and notifications still on, still counting.
    await sup.reload();
    await sup.getByRole("heading", { name: "Supervisor console" }).waitFor();
    assert.equal(await sup.locator("#view-supervisor").isVisible(), true);
    await sup.locator("#alerts-enable", { hasText: "Sound and notifications are on" }).waitFor();
    await sup.waitForFunction(() => document.title === "(1) peerhub");
    await sup.locator("#push-status", { hasText: "This device gets escalation pushes" }).waitFor();

    // A notification's link lands on the escalation in the console.
    await sup.goto(`${origin}/#escalation=1`);
    await sup.getByRole("heading", { name: "Supervisor console" }).waitFor();
    await sup.locator("#queue-list > li").first().waitFor();
    assert.equal(await sup.evaluate(() => location.hash), "", "the link is tidied away");

    // A push reaching the worker becomes a content-free notification with an
    // Acknowledge action (delivered through the debugging protocol, as the browser's
    // push service would).
    const cdp = await supervisor.context.newCDPSession(sup);
    const registrations = [];
    cdp.on("ServiceWorker.workerRegistrationUpdated", (ev) => registrations.push(...ev.registrations));
    await cdp.send("ServiceWorker.enable");
    for (let i = 0; i < 50 && !registrations.some((r) => r.scopeURL === `${origin}/staff/`); i += 1) {
      await new Promise((r) => setTimeout(r, 100));
    }
    // The live registration: after the reload above the events may also list an
    // older one for the same scope.
    const registration = registrations.filter((r) => r.scopeURL === `${origin}/staff/` && !r.isDeleted).at(-1);
    assert.ok(registration, "the staff worker is registered");
    // Deliver only to an activated worker (a push to one still starting can be lost
    // by the debugging protocol, which is not what this test is about).
    await sup.waitForFunction(async () => (await navigator.serviceWorker.getRegistration("./staff/"))?.active?.state === "activated");
    const deliver = () =>
      cdp.send("ServiceWorker.deliverPushMessage", {
        origin,
        registrationId: registration.registrationId,
        // An id of its own: the open console alerts for escalation 1 itself, with the
        // same tag, and whichever comes last would replace the other.
        data: JSON.stringify({ escalation: 99, severity: "urgent", group: "Demo drop-in", seconds_left: 75, url: `${origin}/#escalation=99` }),
      });
    await deliver();
    let shown = [];
    for (let i = 0; i < 100 && shown.length === 0; i += 1) {
      if (i === 50) {
        // Once in about fifteen runs no notification came from the first delivery
        // through the debugging protocol (whether it reached the worker could not
        // be seen): one more, as a push service retries. The worker must show it.
        await deliver();
      }
      shown = await sup.evaluate(async () => {
        const reg = await navigator.serviceWorker.getRegistration("./staff/");
        const list = await reg.getNotifications();
        return list
          .filter((n) => n.tag === "escalation-99")
          .map((n) => ({ title: n.title, body: n.body, tag: n.tag, actions: n.actions.map((x) => x.action) }));
      });
      if (shown.length === 0) {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const [notification] = shown;
    assert.ok(notification, "the worker showed a notification");
    assert.equal(notification.title, "peerhub: Urgent escalation");
    assert.equal(notification.body, "In Demo drop-in, 1 min 15 s left. Open to respond, or acknowledge here.");
    assert.equal(notification.tag, "escalation-99");
    assert.deepEqual(notification.actions, ["ack"]);

    // "Acknowledge": the worker's own code signs with the key in IndexedDB and
    // posts to /push/ack; the console sees it taken and the title stops counting.
    const acked = await sup.evaluate(async () => (await import("/js/staff-notify.js")).acknowledge(1, location.href));
    assert.deepEqual(acked, { ok: true, status: 200, code: null });
    await sup.waitForFunction(() => document.title === "peerhub");
    const again = await sup.evaluate(async () => (await import("/js/staff-notify.js")).acknowledge(1, location.href));
    assert.deepEqual(again, { ok: false, status: 409, code: "taken" });

    // The one failed request on purpose: the second acknowledgement (409).
    const problems = [...supervisor.problems, ...participant.problems, ...admin.problems].filter(
      (text) => !text.includes("status of 409 (Conflict)"),
    );
    assert.deepEqual(problems, []);
  } finally {
    for (const who of [supervisor, participant, admin, facilitator]) {
      await who.context.close();
    }
  }
});

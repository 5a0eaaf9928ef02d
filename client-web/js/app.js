// peerhub browser client: the entry point.
//
// Map of the parts (each module's header says what it owns):
//
//   encoding.js        base64url, UTF-8, fingerprints, character counts
//   ed25519-strict.js  the strict-verification byte checks WebCrypto does not promise
//   keys.js            our key pair (non-extractable, kept in IndexedDB), sign, verify
//   store.js           IndexedDB: keys, the last counter, names, seen counters
//   identities.js      which key where: one per group, the home key (invites, staff)
//   seen-counters.js   the highest counter seen per sender, across reloads
//   forget.js          "Forget this device"
//   clock.js           server-corrected time for `ts`
//   counters.js        per-key counters that never repeat, across tabs
//   protocol.js        signing bytes, envelopes, payloads, frames, verification
//   names.js           pseudonym normalisation, mirroring protocol/src/names.rs
//   errors.js          every error code as a sentence (the one table)
//   connection.js      socket, hello/auth, request ids, reconnect with backoff
//   nodes.js           the cluster's other nodes, to move to when this one is gone
//   group-session.js   one joined group: standing, state, members, verified logs of
//                      every channel, outbox and retry rule, signed group requests
//   event-records.js   event frames of every channel → verified records
//   standing.js        whether a post to the conversation can be sent now, and why not
//   record-book.js     co-produced records about us (and written here), verified
//   signposting.js     the hub's helplines and whether a supervisor is on call
//   escalation-desk.js escalations a supervisor may act on, verified; the rota
//   time-words.js      times and waits in words
//   links.js           #invite= and #group= in the address bar, without history entries
//   config.js          deployment settings (quick-exit page, timings, helplines)
//   ui/*.js            screens and widgets; they draw, the modules above decide
//
// Data flow: app.js loads the identity, opens one Connection, and routes between the
// start, join and group screens. Joining creates a GroupSession (which rejoins by
// itself after every reconnect); the group screen draws what the session reports —
// agreement, waiting room, conversation or "dismissed" — and the facilitator console
// when this key moderates the group. The record book listens to the connection.
// Supervisors and admins also have the console (the escalation desk's queue), reached
// from the top bar's on-call button; leaving it for a group and back keeps both.
// Support notices go to the group screen when it shows their group, else to the
// page's notice.

import { socketUrl } from "./config.js";
import { ServerClock } from "./clock.js";
import { Connection } from "./connection.js";
import { CounterSource } from "./counters.js";
import { describeErrorFrame, sentenceFor } from "./errors.js";
import { EscalationDesk } from "./escalation-desk.js";
import { GroupSession, SessionState } from "./group-session.js";
import { loadOrCreateIdentity } from "./keys.js";
import { exitForgets, forgetDevice } from "./forget.js";
import { Identities } from "./identities.js";
import { loadNodeSocketUrls } from "./nodes.js";
import { SeenCounters } from "./seen-counters.js";
import { RecordBook } from "./record-book.js";
import { forgetInvite, readLink, writeLink } from "./links.js";
import { isValidGroupId, Kind, redeemPayload } from "./protocol.js";
import { Signposting } from "./signposting.js";
import { openStore } from "./store.js";
import { initAnnouncer } from "./ui/announcer.js";
import { byId, roleLabel } from "./ui/dom.js";
import { createGroupView } from "./ui/group-view.js";
import { initHelplines } from "./ui/helplines.js";
import { createJoinView, createNameMemory } from "./ui/join-view.js";
import { createStaffNameForm } from "./ui/staff-name-form.js";
import { createOnCallIndicator } from "./ui/on-call.js";
import { createSupervisorView } from "./ui/supervisor-view.js";
import { createStaffApp } from "./ui/staff-app.js";
import { readStaffPrefs, writeStaffPrefs } from "./staff-prefs.js";
import { NOTICE_TITLE } from "./ui/support-words.js";
import { clearNotice, clearNoticeIf, initNotices, showNotice } from "./ui/notices.js";
import { initQuickExit } from "./ui/quick-exit.js";
import { createStartView } from "./ui/start-view.js";
import { bindStatusLine } from "./ui/status-line.js";

const VIEWS = ["loading", "unsupported", "start", "join", "group", "supervisor"];

let connection = null;
let session = null;
let views = null;
let desk = null;
let onCall = null;
// Which key is used where (identities.js), the store, and the first login with the
// home key (its roles decide which key a new group gets).
let identities = null;
let store = null;
let homeKnown = null;

// An invite from the address bar, redeemed after the first login; kept until the
// server has answered so that a dropped connection does not lose it.
let pendingInvite = null;
let redeeming = false;
let redeemSent = false;
// A staff invite (the link's hint) is redeemed with the name colleagues know the
// person by, asked first (ui/staff-name-form.js); null until they give it.
let pendingStaff = false;
let staffName = null;
let staffNameForm = null;

function showView(name, { focus = true } = {}) {
  for (const view of VIEWS) {
    byId(`view-${view}`).hidden = view !== name;
  }
  // The group screen is wider (conversation beside the private panel and console).
  byId("main").dataset.view = name;
  document.body.dataset.view = name;
  // "I need support now" is in the top bar on every screen a participant sees; the
  // supervisor console has no use for it (group-view hides it for facilitators).
  if (name === "supervisor") {
    byId("support-now").hidden = true;
  } else if (name !== "group" || !session?.canModerate()) {
    byId("support-now").hidden = false;
  }
  if (focus) {
    // Move focus to the new screen's heading so screen readers announce it.
    byId(`view-${name}`).querySelector("h1")?.focus();
  }
}

// ---- routes ----

function route(link, { initial = false } = {}) {
  if (link.invite && link.invite !== pendingInvite && !redeemSent) {
    pendingInvite = link.invite;
    pendingStaff = link.staff;
    staffName = null;
    if (pendingStaff) {
      staffNameForm?.ask();
    }
    if (connection?.authenticated) {
      redeemInvite();
    }
  }
  if (link.group) {
    if (!isValidGroupId(link.group)) {
      goToStart({ focus: !initial });
      showNotice(sentenceFor("invalid_group_id"), "error");
      return;
    }
    if (session && session.groupId === link.group && session.state !== SessionState.FAILED) {
      showView("group", { focus: !initial });
      return;
    }
    showJoin(link.group, { focus: !initial });
    return;
  }
  goToStart({ focus: !initial });
}

// ---- the supervisor console ----

function showConsole() {
  views.supervisor.show();
  showView("supervisor");
  writeStaffPrefs({ console: true });
}

// A console link (#console, #escalation=<id>, or the console open before a reload)
// waits for login: only then is it known whether this key is staff.
let consoleWanted = null;

function openConsoleLink() {
  if (!consoleWanted || !desk?.isStaff()) {
    return;
  }
  const { escalation } = consoleWanted;
  consoleWanted = null;
  writeLink({});
  showConsole();
  if (escalation !== null) {
    // The queue may still be loading: try again for a little while.
    let tries = 0;
    const focus = () => {
      if (!views.supervisor.focusEscalation(escalation) && (tries += 1) < 20) {
        setTimeout(focus, 250);
      }
    };
    focus();
  }
}

/** Back from the console: to the group if one is open, else the start. */
function leaveConsole() {
  writeStaffPrefs({ console: false });
  if (session && session.state !== SessionState.FAILED) {
    showView("group", { focus: false });
    views.group.focusStage();
  } else {
    goToStart();
  }
}

/** A supervisor joins an escalation's group (the normal join; staff pass the door). */
async function joinFromConsole(groupId, name) {
  if (session && session.groupId === groupId && session.state === SessionState.JOINED) {
    showView("group", { focus: false });
    views.group.focusStage();
    return;
  }
  writeLink({ group: groupId });
  await joinGroup(groupId, name, null);
  views.supervisor.refreshNames();
}

/** A verified pseudonym for a key of a group, when the group on screen is that one. */
function nameFor(groupId, key) {
  if (!session || session.groupId !== groupId) {
    return null;
  }
  const member = session.member(key);
  return member?.verified ? member.name : null;
}

function goToGroup(groupId) {
  clearNotice();
  writeLink({ invite: pendingInvite, group: groupId });
  showJoin(groupId);
}

function showJoin(groupId, { focus = true } = {}) {
  leaveSession();
  views.join.show(groupId);
  showView("join", { focus: false });
  if (focus) {
    views.join.focusName();
  }
}

function goToStart({ focus = true } = {}) {
  leaveSession();
  // Back to the home key: the start screen, invites and staff work use it, never a
  // group's key.
  if (identities?.home && connection) {
    connection.useIdentity(identities.home);
  }
  writeLink({ invite: pendingInvite });
  views.start.show();
  showView("start", { focus });
}

function leaveSession() {
  if (session) {
    const leaving = session;
    session = null;
    views.group.unmount();
    leaving.leave();
  }
}

/**
 * Joins a group with this device's key for it (identities.js); resolves when joined,
 * rejects with the error if refused. `sessionOnly`: a new key kept in this tab only;
 * `passphrase`: locks a new group's key, or opens a locked one.
 */
async function joinGroup(groupId, name, accessCode = null, { sessionOnly = false, passphrase = "" } = {}) {
  leaveSession();
  await homeKnown;
  const identity = await identities.keyFor(groupId, { sessionOnly, passphrase });
  // Log in under the group's key first: nothing is sent for this group under another.
  await connection.useIdentity(identity);
  const seen = new SeenCounters(identities.isSessionOnly(groupId) ? memoryStore() : store, groupId);
  return enterGroup(groupId, name, accessCode, identity, seen);
}

/** A store that keeps nothing beyond this page (session-only groups). */
function memoryStore() {
  const map = new Map();
  return {
    persistent: false,
    get: async (k) => map.get(k),
    put: async (k, v) => void map.set(k, v),
    update: async (k, change) => {
      const next = change(map.get(k));
      map.set(k, next);
      return next;
    },
  };
}

function enterGroup(groupId, name, accessCode, identity, seen) {
  const s = new GroupSession({ connection, identity, groupId, name, accessCode, seen });
  session = s;
  views.group.mount(s);
  return new Promise((resolve, reject) => {
    const onState = (ev) => {
      const { state, error } = ev.detail;
      if (state === SessionState.JOINED) {
        s.removeEventListener("state", onState);
        showView("group", { focus: false });
        views.group.focusStage();
        resolve();
      } else if (state === SessionState.FAILED || state === SessionState.LEFT || state === SessionState.DISMISSED) {
        s.removeEventListener("state", onState);
        if (session === s) {
          session = null;
          views.group.unmount();
          s.dispose();
        }
        reject(error ?? { code: "disconnected" });
      }
    };
    s.addEventListener("state", onState);
    s.join().catch(() => {}); // reported through "state"
  });
}

/** "Join the next session" after the last one ended: a fresh join with the same name. */
function joinAgain(ended) {
  if (!ended) {
    return;
  }
  const { groupId, name, accessCode } = ended;
  joinGroup(groupId, name, accessCode).catch((err) => {
    views.join.show(groupId);
    showView("join", { focus: false });
    views.join.showRefusal({ name, accessCode }, err);
  });
}

// ---- invites ----

async function redeemInvite() {
  const token = pendingInvite;
  if (!token || redeeming) {
    return;
  }
  if (pendingStaff && staffName === null) {
    staffNameForm?.ask(); // redeemed once the person gives their name
    return;
  }
  redeeming = true;
  const retried = redeemSent;
  redeemSent = true;
  let used = null;
  try {
    // The home key if it is staff or still unused, else a new key (identities.js).
    used = (await identities.keyForInvite()).identity;
    if (connection.identity.publicKey !== used.publicKey) {
      if (session && session.identity.publicKey !== used.publicKey) {
        leaveSession();
      }
      await connection.useIdentity(used);
    }
    const reply = await connection.signedRequest("redeem", Kind.REDEEM, (counter, ts) =>
      redeemPayload(token, counter, ts, pendingStaff ? staffName : null),
    );
    pendingInvite = null;
    pendingStaff = false;
    redeemSent = false; // answered: another invite link may follow in this tab
    forgetInvite();
    await identities.afterRedeem(used, reply);
    views.start.setIdentity(identities.home);
    connection.roles = Array.isArray(reply.roles) ? reply.roles : connection.roles;
    if (connection.identity.publicKey === identities.home.publicKey) {
      identities.observeHomeRoles(connection.roles);
    }
    views.join.refreshChoices();
    views.start.setRoles(connection.roles);
    if (desk.isStaff()) {
      // A new supervisor or admin: the queue arrives as pushes; read the rota too.
      desk.loadRota();
    }
    onCall.render();
    if (reply.role === "member" && typeof reply.group === "string") {
      if (!session && isValidGroupId(reply.group) && !readLink().group) {
        goToGroup(reply.group);
      }
      showNotice(`Invite accepted. You can now join the group ${reply.group}.`, "success");
    } else {
      showNotice(`Invite accepted. You now have the ${roleLabel(reply.role).toLowerCase()} role on this device.`, "success");
    }
  } catch (err) {
    if (err.code === "disconnected" || err.code === "not_connected") {
      return; // tried again after the next login
    }
    if (used && used.publicKey !== identities.home.publicKey && !session) {
      connection.useIdentity(identities.home); // the new key bound nothing
    }
    if (err.code === "invalid" && pendingStaff && staffName !== null) {
      // Only the name can be refused here, and before the invite is spent: keep it.
      staffName = null;
      redeemSent = false;
      staffNameForm.refuse(err.frame ? describeErrorFrame(err.frame) : sentenceFor(err.code));
      return;
    }
    pendingInvite = null;
    pendingStaff = false;
    redeemSent = false;
    forgetInvite();
    if (err.code === "bad_token" && retried && connection.roles.length > 0) {
      // The first attempt may have succeeded before the connection dropped: invites
      // are single use, so the retry cannot tell.
      showNotice(
        `This invite has been used, possibly by you just now. Your roles on this device: ${connection.roles.map(roleLabel).join(", ")}.`,
        "info",
      );
    } else {
      showNotice(err.frame ? describeErrorFrame(err.frame) : sentenceFor(err.code), "error");
    }
  } finally {
    redeeming = false;
  }
}

// ---- start ----

/**
 * After "Forget this device": a page that holds nothing and makes nothing (no key is
 * made until someone chooses to start again), so the next person finds an empty browser.
 */
function showForgotten() {
  writeLink({});
  document.title = "peerhub";
  const main = document.createElement("main");
  main.className = "forgotten";
  const title = document.createElement("h1");
  title.tabIndex = -1;
  title.textContent = "This device has forgotten everything peerhub kept here";
  const text = document.createElement("p");
  text.textContent = "Your groups, the names you used and what let you back in are gone from this browser.";
  const again = document.createElement("a");
  again.href = globalThis.location.pathname;
  again.className = "button-link";
  again.textContent = "Start again";
  main.append(title, text, again);
  document.body.replaceChildren(main);
  title.focus();
}

function showUnsupported(code) {
  byId("unsupported-text").textContent = sentenceFor(code);
  showView("unsupported", { focus: false });
}

async function boot() {
  initNotices();
  initAnnouncer();
  // Sheets open under the top bar, whose height changes (a notice, wrapping, zoom).
  const topbar = byId("topbar");
  const keepTopbarHeight = () =>
    document.documentElement.style.setProperty("--topbar-h", `${Math.ceil(topbar.getBoundingClientRect().height)}px`);
  keepTopbarHeight();
  globalThis.ResizeObserver ? new ResizeObserver(keepTopbarHeight).observe(topbar) : globalThis.addEventListener("resize", keepTopbarHeight);
  initQuickExit({
    button: byId("quick-exit"),
    beforeExit: () => connection?.close(),
    // "Quick exit also forgets this device" (saved on the start screen).
    forget: () => (exitForgets() ? forgetDevice(store) : null),
  });
  byId("skip-link").addEventListener("click", (ev) => {
    // A real "#main" would add a history entry and a hash the router reads.
    ev.preventDefault();
    byId("main").focus();
  });

  const signposting = new Signposting();
  initHelplines(signposting);
  store = await openStore();
  identities = new Identities(store);
  let identity;
  try {
    identity = await identities.load(loadOrCreateIdentity);
  } catch (err) {
    showUnsupported(err.code ?? "no_ed25519");
    return;
  }

  connection = new Connection({
    url: socketUrl(),
    identity,
    counters: new CounterSource(store),
    clock: new ServerClock(),
  });
  bindStatusLine(byId("connection-status"), byId("reconnect"), connection);
  // In a cluster, the other nodes to move to if this one fails (none on one node).
  loadNodeSocketUrls().then((urls) => connection.setUrls(urls));

  signposting.listen(connection);
  const recordBook = new RecordBook({ connection, identity });
  const names = createNameMemory(store);
  byId("names-forget").addEventListener("click", async () => {
    try {
      await names.forget();
      byId("names-forget-result").textContent = "Done: this device no longer remembers them.";
      views.start.show();
    } catch {
      byId("names-forget-result").textContent = "This device couldn't forget them. Clearing this site's data in the browser's settings does.";
    }
  });
  staffNameForm = createStaffNameForm({
    store,
    onName: (name) => {
      staffName = name;
      if (connection.authenticated) {
        redeemInvite();
      } // else: redeemed after the login
    },
    onLater: () => {
      pendingInvite = null;
      pendingStaff = false;
      forgetInvite();
      showNotice("The invite was not used. It still works until it expires: open its link again when you're ready.", "info");
    },
  });
  const forgetAll = async () => {
    connection.close();
    leaveSession();
    identities.forgetMemory();
    const { ok } = await forgetDevice(store);
    if (ok) {
      showForgotten();
    }
    return ok;
  };
  desk = new EscalationDesk({ connection, identity });
  views = {
    start: createStartView({ identity, connection, desk, onGoToGroup: goToGroup, onOpenConsole: showConsole, names, identities, onForget: forgetAll }),
    join: createJoinView({ connection, onJoin: joinGroup, onBack: () => goToStart(), names, identities }),
    group: createGroupView({
      connection,
      recordBook,
      signposting,
      onLeave: ({ left = false } = {}) => {
        goToStart();
        if (left) {
          showNotice("You've left the group.", "info");
        }
      },
      onRejoin: joinAgain,
    }),
    supervisor: createSupervisorView({
      desk,
      connection,
      identity,
      signposting,
      nameFor,
      onJoin: joinFromConsole,
      onBack: leaveConsole,
      onOpen: showConsole,
    }),
  };
  onCall = createOnCallIndicator({ desk, connection, onOpen: showConsole });
  createStaffApp({
    desk,
    connection,
    alerts: views.supervisor.alerts,
    onOpenEscalation: (id) => {
      consoleWanted = { escalation: id };
      openConsoleLink();
    },
  });

  // How a request for support is going: on the group screen when it shows that group.
  connection.addEventListener("support", (ev) => {
    const frame = ev.detail;
    if (!views.group.supportNotice(frame)) {
      const title = NOTICE_TITLE[frame.notice] ?? "News about a request for support";
      const group = typeof frame.group === "string" ? ` (group ${frame.group})` : "";
      showNotice(`${title}${group}. ${typeof frame.message === "string" ? frame.message.slice(0, 500) : ""}`, "info");
    }
  });

  let homeLogin;
  homeKnown = new Promise((resolve) => {
    homeLogin = resolve;
  });
  connection.addEventListener("authenticated", (ev) => {
    if (ev.detail.key === identities.home?.publicKey) {
      identities.observeHomeRoles(ev.detail.roles);
      homeLogin();
    }
    clearNoticeIf(sentenceFor("shutting_down"));
    views.start.setRoles(ev.detail.roles);
    onCall.render();
    redeemInvite();
    openConsoleLink();
  });
  connection.addEventListener("shutdown", () => showNotice(sentenceFor("shutting_down")));
  connection.addEventListener("server-error", (ev) => {
    showNotice(describeErrorFrame(ev.detail), "error");
  });
  connection.addEventListener("fatal", (ev) => showNotice(sentenceFor(ev.detail.code), "error"));

  globalThis.addEventListener("hashchange", () => {
    const link = readLink();
    if (link.console) {
      consoleWanted = { escalation: link.escalation };
      openConsoleLink();
      return;
    }
    route(link);
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      connection.wake();
    }
  });
  globalThis.addEventListener("pageshow", (ev) => {
    if (ev.persisted) {
      connection.wake();
    }
  });

  const first = readLink();
  if (first.console || (readStaffPrefs().console && !first.group && !first.invite)) {
    consoleWanted = { escalation: first.escalation };
  }
  route(first, { initial: true });
  connection.start();
}

boot().catch((err) => {
  // Nothing sensitive in here: a code or a JavaScript error message.
  console.error("peerhub failed to start", err);
  showUnsupported(err?.code ?? "internal");
});

// Starts the real peerhub binary for one test: loopback, port 0, a fresh temporary
// data folder, the demo group and invites, short escalation deadlines and generous
// rate limits (the tests click faster than people do). Parses the printed address and
// links, and stops the server (SIGTERM, then SIGKILL) when asked.

import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, "../../..");
/** The server binary `scripts/test.sh` builds (override with PEERHUB_BIN). */
export const BINARY = process.env.PEERHUB_BIN ?? join(REPO, "target/debug/peerhub");

/** Deadlines short enough to watch, long enough for a test to acknowledge in time. */
export const DEADLINES = { emergency: 60_000, urgent: 90_000, concern: 120_000 };

const LINKS = {
  "first admin (single use, 24 h)": "admin",
  "demo facilitator": "facilitator",
  "demo supervisor": "supervisor",
  "demo participant": "participant",
};

/**
 * `listen`: the address (a cluster's nodes need theirs known before they start);
 * `env`: more of the hub's settings as PEERHUB_* variables (`[cluster]`);
 * `links`: the printed links that must be there (a cluster's second node prints no
 * first-admin link).
 */
export async function startServer({
  deadlines = DEADLINES,
  extraArgs = [],
  listen = "127.0.0.1:0",
  env: settings = {},
  links: wanted = Object.values(LINKS),
} = {}) {
  const data = await mkdtemp(join(tmpdir(), "peerhub-browser-"));
  const args = [
    "--listen", listen,
    "--data", join(data, "data"),
    "--demo",
    "--deadline-emergency-ms", String(deadlines.emergency),
    "--deadline-urgent-ms", String(deadlines.urgent),
    "--deadline-concern-ms", String(deadlines.concern),
    "--messages-per-second", "1000",
    "--message-burst", "1000",
    "--commands-per-second", "1000",
    "--flags-per-minute", "1000",
    ...extraArgs,
  ];
  // The harness's own PEERHUB_BIN, PEERHUB_CHROMIUM and PEERHUB_TEST_LOGS are not the
  // hub's settings, and the hub refuses a PEERHUB_ variable it does not know.
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" };
  for (const name of ["PEERHUB_BIN", "PEERHUB_CHROMIUM", "PEERHUB_TEST_LOGS"]) {
    delete env[name];
  }
  Object.assign(env, settings);
  const child = spawn(BINARY, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env,
  });
  const stderr = [];
  child.stderr.on("data", (chunk) => {
    stderr.push(chunk.toString());
    if (process.env.PEERHUB_TEST_LOGS) {
      process.stderr.write(chunk);
    }
  });
  const links = {};
  let url = null;
  let readyTimer;
  const ready = new Promise((resolveReady, rejectReady) => {
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const listening = line.match(/^peerhub listening on (\S+)$/);
      if (listening) {
        url = listening[1];
      }
      const link = line.match(/^([^:]+): (http\S+)$/);
      if (link && LINKS[link[1]]) {
        links[LINKS[link[1]]] = link[2];
      }
      if (line === "ready") {
        resolveReady();
      }
    });
    child.once("exit", (code) => rejectReady(new Error(`peerhub exited (${code}) before it was ready:\n${stderr.join("")}`)));
    readyTimer = setTimeout(() => rejectReady(new Error(`peerhub was not ready in 20 s:\n${stderr.join("")}`)), 20_000);
  });
  try {
    await ready;
  } catch (err) {
    child.kill("SIGKILL");
    await rm(data, { recursive: true, force: true });
    throw err;
  } finally {
    clearTimeout(readyTimer);
  }
  for (const name of wanted) {
    if (!links[name]) {
      throw new Error(`peerhub did not print the ${name} link`);
    }
  }
  let stopped = false;
  return {
    url,
    links,
    stderr,
    /** The hub's data folder (gone after `stop()` unless `keepData`). */
    dataDir: join(data, "data"),
    /** Kills the hub at once (SIGKILL: no goodbye, no lease given back), keeping its folder until `stop()`. */
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGKILL");
        await exited;
      }
    },
    /** Stops the hub (SIGTERM); `keepData`: leave the folder for the test to read and remove. */
    async stop({ keepData = false } = {}) {
      if (stopped) {
        return;
      }
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      }
      if (!keepData) {
        await rm(data, { recursive: true, force: true });
      }
    },
  };
}

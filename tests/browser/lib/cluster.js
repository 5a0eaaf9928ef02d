// A peerhub cluster for one test: one nats-server with JetStream (one copy of every
// stream: the browser tests prove the client, the Rust tests prove the cluster) and
// peerhub nodes on loopback ports chosen before they start, each given the others'
// origins in `cluster.client_urls`, so a page served by one may move to another.
//
// nats-server is the one scripts/test.sh installs (scripts/nats/install.sh, pinned
// by hash), found by TEST_NATS_SERVER as the Rust tests find it: when it is set and
// the file is missing the test fails; when it is unset and target/nats/bin/nats-server
// is missing the test is skipped (`natsServer()` is null).

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { REPO, startServer } from "./server.js";

/** The nats-server binary, or null when none is installed and none was asked for. */
export function natsServer() {
  const asked = process.env.TEST_NATS_SERVER;
  if (asked) {
    if (!existsSync(asked)) {
      throw new Error(`TEST_NATS_SERVER=${asked}: no such file`);
    }
    return asked;
  }
  const installed = join(REPO, "target/nats/bin/nats-server");
  return existsSync(installed) ? installed : null;
}

/** A loopback port free right now (taken by the caller at once). */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

/** Starts one nats-server with JetStream; resolves once it is ready. */
async function startNats(binary, dir) {
  const port = await freePort();
  const conf = join(dir, "nats.conf");
  await writeFile(conf, `listen: 127.0.0.1:${port}\njetstream {\n  store_dir: "${join(dir, "js")}"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n`);
  const child = spawn(binary, ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
  const log = [];
  await new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`nats-server not ready in 15 s:\n${log.join("")}`)), 15_000);
    child.stderr.on("data", (chunk) => {
      log.push(chunk.toString());
      if (log.join("").includes("Server is ready")) {
        clearTimeout(timer);
        resolveReady();
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited (${code}):\n${log.join("")}`));
    });
  });
  return {
    url: `nats://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await exited;
      }
    },
  };
}

/**
 * NATS and `count` peerhub nodes (`--demo`, lease 2 s), every node listing every
 * node's origin. Resolves with { nats, nodes, stop() }; node 1 printed the
 * first-admin link, every node its demo links (with its own address).
 */
export async function startCluster({ count = 2 } = {}) {
  const binary = natsServer();
  if (!binary) {
    return null;
  }
  const dir = await mkdtemp(join(tmpdir(), "peerhub-browser-nats-"));
  const nats = await startNats(binary, dir);
  const nodes = [];
  try {
    const ports = [];
    for (let i = 0; i < count; i += 1) {
      ports.push(await freePort());
    }
    const origins = ports.map((p) => `http://127.0.0.1:${p}`);
    for (const [i, port] of ports.entries()) {
      nodes.push(
        await startServer({
          listen: `127.0.0.1:${port}`,
          env: {
            PEERHUB_CLUSTER_NATS_URLS: nats.url,
            PEERHUB_CLUSTER_NODE_NAME: `n${i + 1}`,
            PEERHUB_CLUSTER_REPLICAS: "1",
            PEERHUB_CLUSTER_LEASE_TTL_MS: "2000",
            PEERHUB_CLUSTER_CLIENT_URLS: origins.join(","),
          },
          links: i === 0 ? undefined : ["facilitator", "supervisor", "participant"],
        }),
      );
    }
  } catch (err) {
    await Promise.all(nodes.map((n) => n.stop()));
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    nats,
    nodes,
    async stop() {
      await Promise.all(nodes.map((n) => n.stop()));
      await nats.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

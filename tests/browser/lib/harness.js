// What every test file does around its tests: a real hub and a headless browser
// before, both stopped after; and axe-core's serious and critical findings on a page
// at the phone and desktop widths the issues ask for.

import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";

import { launch } from "./browser.js";
import { startServer } from "./server.js";

const require = createRequire(import.meta.url);
const AXE_SOURCE = await readFile(require.resolve("axe-core/axe.min.js"), "utf8");

/** A started hub (startServer's `options`) and browser: { server, browser }. */
export async function startBoth(options) {
  const server = await startServer(options);
  try {
    return { server, browser: await launch() };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

/** Stops what `startBoth` started (either may be missing if it failed). */
export async function stopBoth({ server, browser }) {
  await browser?.close();
  await server?.stop();
}

/** axe-core's serious and critical violations on `page` as it is now. */
export async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof globalThis.axe === "object"))) {
    await page.evaluate(AXE_SOURCE);
  }
  const result = await page.evaluate(() => globalThis.axe.run(document, { resultTypes: ["violations"] }));
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => ({ id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
}

/**
 * Runs axe-core on `page` at 320 px and 1280 px wide (`height` tall), adding each
 * finding to `failures` as a line naming `step`; `each(label)` runs after each width
 * (more checks at that size). The page's viewport is put back after.
 */
export async function axeAt(page, step, failures, { height = 740, each = null } = {}) {
  const restore = page.viewportSize();
  for (const width of [320, 1280]) {
    await page.setViewportSize({ width, height });
    for (const v of await axeViolations(page)) {
      failures.push(`${step} at ${width} px: ${v.impact} ${v.id}: ${v.help} at ${v.targets.slice(0, 3).join(", ")}`);
    }
    if (each) {
      await each(`${step} at ${width} px`);
    }
  }
  await page.setViewportSize(restore);
}

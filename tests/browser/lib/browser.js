// Debian's Chromium, headless, driven by playwright-core. No browser is ever
// downloaded: the tests use /usr/bin/chromium (scripts/test.sh installs it from
// Debian's packages when it is missing).

import { chromium } from "playwright-core";

export const CHROMIUM = process.env.PEERHUB_CHROMIUM ?? "/usr/bin/chromium";
export const DESKTOP = { width: 1100, height: 800 };
export const NARROW = { width: 320, height: 720 };

export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
}

/**
 * A person: their own browser context (so their own IndexedDB and key), one page.
 * Page errors and console errors are collected in `problems` so a test can show them.
 */
export async function person(browser, name, { viewport = DESKTOP, permissions = [], origin } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, locale: "en-GB" });
  if (permissions.length && origin) {
    await context.grantPermissions(permissions, { origin });
  }
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push(`${name}: page error: ${err.message}`));
  page.on("console", (msg) => {
    // Playwright's contexts are incognito, where Chrome refuses the Push API and says
    // so on the console itself (the page cannot tell, by design). The staff console
    // then says pushes could not be set up; that is not a page error.
    if (msg.type() === "error" && !msg.text().includes("does not support the Push API in incognito mode")) {
      problems.push(`${name}: console: ${msg.text()}`);
    }
  });
  return { name, context, page, problems };
}

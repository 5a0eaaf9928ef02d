// Steps every test takes the way a person would: open a link, choose a name, agree,
// let someone in, write. Each waits for what the person would see next.

import assert from "node:assert/strict";

/**
 * Opens an invite link and waits for "Invite accepted". A staff invite's link
 * (`&staff=1`) first asks the name colleagues know the person by: `name` answers it.
 */
export async function redeem(page, link, { name = "Sam Carter" } = {}) {
  await page.goto(link);
  if (/[#&]staff=1(&|$)/.test(link)) {
    await page.locator("#staff-name-input").fill(name);
    await page.getByRole("button", { name: "Accept the invite" }).click();
  }
  await page.locator("#app-notice-text", { hasText: "Invite accepted" }).waitFor();
}

/** On the join screen: choose a name and join. */
export async function joinAs(page, name) {
  await page.locator("#join-name").fill(name);
  await page.getByRole("button", { name: "Join", exact: true }).click();
}

/** Reads and accepts the agreement shown (first stage, or the card above the room). */
export async function agree(page) {
  await page.locator("#stage-agreement").waitFor();
  await page.locator("#agreement-accept").click();
  await page.locator("#stage-agreement").waitFor({ state: "hidden" });
}

/** Writes to the group's conversation. */
export async function say(page, text) {
  const box = page.locator("#composer-input");
  await box.fill(text);
  await box.press("Enter");
}

/** The conversation item showing `text`. */
export function message(page, text) {
  return page.locator("#message-list > li", { hasText: text });
}

/**
 * Waits until the message with `text` is verified by this browser. Trust by exception:
 * people see no mark on it; the item carries data-verified="true", and no warning.
 */
export async function expectVerified(page, text) {
  await page.locator('#message-list > li[data-verified="true"]', { hasText: text }).first().waitFor();
  const item = message(page, text);
  assert.equal(await item.locator(".mark-bad").count(), 0, `"${text}" shows no unverified mark`);
}

/** The public key this browser holds (start screen, "Show the full key"). */
export async function publicKey(page) {
  const key = (await page.locator("#key-full").textContent())?.trim();
  assert.match(key, /^[A-Za-z0-9_-]{43}$/);
  return key;
}

/** An admin puts `key` on the rota at level 1 from now for eight hours, and saves. */
export async function putOnRota(adminPage, key) {
  // Picked from the staff list (issue 15), not pasted.
  await adminPage.locator("#rota-pick").selectOption(key);
  await adminPage.getByRole("button", { name: "Add to the list" }).click();
  await adminPage.getByRole("button", { name: "Save the rota" }).click();
  await adminPage.locator("#rota-result", { hasText: "The rota is saved and in force." }).waitFor();
}

/**
 * News about a request for support: in the support panel when it is open, else told
 * under the top bar ("… Tap to read."), which opens it. Resolves with the item.
 */
export async function supportNews(page, text) {
  const item = page.locator("#support-updates li", { hasText: text });
  await item.waitFor({ state: "attached" });
  if (!(await item.isVisible())) {
    await page.locator("#support-alert-open").click();
  }
  await item.waitFor();
  return item;
}

export const CRYPTO_WORDS = /\bkeys?\b|fingerprint|signature|signed|\bverif/i;

/** Nothing about keys, fingerprints or signatures on screen, in labels or in titles. */
export async function noCryptoWords(page, step, { except = null } = {}) {
  const texts = await page.evaluate((skip) => {
    const out = [];
    const visible = (el) => el.getClientRects().length > 0;
    // innerText of the live page (only what is rendered), minus the excepted items.
    let text = document.body.innerText;
    for (const el of skip ? document.querySelectorAll(skip) : []) {
      text = text.replace(el.innerText, "");
    }
    out.push(text);
    for (const el of document.querySelectorAll("[aria-label], [title]")) {
      if (visible(el) && !(skip && el.closest(skip))) {
        out.push(el.getAttribute("aria-label") ?? "", el.getAttribute("title") ?? "");
      }
    }
    return out;
  }, except);
  for (const t of texts) {
    const hit = CRYPTO_WORDS.exec(t);
    assert.equal(hit ? t.slice(Math.max(0, hit.index - 60), hit.index + 40) : null, null, `${step}: no keys, fingerprints or signatures are shown`);
  }
}

/** Every visible button, link and summary on the page is at least 44 × 44 px. */
export async function tapTargets(page, step) {
  const small = await page.evaluate(() =>
    [...document.querySelectorAll("button, a[href], summary")]
      .filter((el) => el.getClientRects().length > 0 && !el.closest(".visually-hidden, .skip-link"))
      .map((el) => ({ el, r: el.getBoundingClientRect() }))
      .filter(({ r }) => r.width < 44 || r.height < 44)
      .map(({ el, r }) => `${el.tagName.toLowerCase()} "${el.textContent.trim().slice(0, 30)}" ${Math.round(r.width)}×${Math.round(r.height)}`),
  );
  assert.deepEqual(small, [], `${step}: every tap target is at least 44 × 44 px`);
}

// The console on a broker whose HTTP listener asks for credentials, in headless Chromium
// (playwright-core). Started by tests/console_browser.rs, which owns the broker: topic
// `SKIFF_TOPIC` exists, user `SKIFF_ADMIN` (`user:password`) is a super user and `SKIFF_USER`
// has no ACLs. Checks: without credentials the page is 401 with the Basic challenge (what makes
// a browser prompt); with the super user's the console works; with the other user's it shows
// the refusals with the missing permission instead of data. Prints `PASS` at the end.
//
// Environment: SKIFF_CONSOLE_URL, SKIFF_CHROMIUM, SKIFF_NODE_MODULES, SKIFF_SCREENSHOTS,
// SKIFF_TOPIC, SKIFF_ADMIN, SKIFF_USER.
"use strict";

const path = require("node:path");
const fs = require("node:fs");

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (tests/console_browser.rs sets it)`);
  return v;
};
const base = env("SKIFF_CONSOLE_URL");
const shots = env("SKIFF_SCREENSHOTS");
const topic = env("SKIFF_TOPIC");
const credentials = (value) => {
  const i = value.indexOf(":");
  return { username: value.slice(0, i), password: value.slice(i + 1) };
};
const { chromium } = require(path.join(env("SKIFF_NODE_MODULES"), "playwright-core"));
const STEP_MS = 20_000;

function log(msg) {
  process.stderr.write(`[browser ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** Waits until the locator's text contains every string of `want`. */
async function seeText(locator, want, what) {
  const deadline = Date.now() + STEP_MS;
  let shown = "";
  for (;;) {
    shown = await locator.innerText({ timeout: 1000 }).catch(() => "");
    if (want.every((w) => shown.includes(w))) return;
    if (Date.now() > deadline) throw new Error(`${what}: not seen within ${STEP_MS} ms; shown: ${JSON.stringify(shown.slice(0, 400))}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: env("SKIFF_CHROMIUM"),
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"],
  });
  const problems = [];
  const open = async (httpCredentials) => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, httpCredentials });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_MS);
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      // Refused API calls log "Failed to load resource" on purpose; nothing else may.
      if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`console: ${m.text()}`);
    });
    return page;
  };
  let page = null;
  try {
    // No credentials: the listener answers 401 with the challenge that makes a browser prompt
    // (headless Chromium cannot show the prompt: Playwright fails such a navigation with
    // ERR_INVALID_AUTH_CREDENTIALS, so the browser context's own request API looks at it).
    page = await open(undefined);
    const first = await page.context().request.get(`${base}/`);
    const challenge = first.headers()["www-authenticate"] ?? "";
    if (first.status() !== 401 || !challenge.startsWith('Basic realm="skiff"')) {
      throw new Error(`without credentials: ${first.status()} ${challenge}`);
    }
    const refused = await page.goto(`${base}/`).then(
      (r) => `answered ${r.status()}`,
      (e) => (String(e.message).includes("ERR_INVALID_AUTH_CREDENTIALS") ? null : e.message),
    );
    if (refused !== null) throw new Error(`a navigation without credentials was not refused: ${refused}`);
    log("ok: 401 with the Basic challenge without credentials");

    // The super user: the console as usual, the topic listed.
    page = await open(credentials(env("SKIFF_ADMIN")));
    const ok = await page.goto(`${base}/#/topics`);
    if (ok.status() !== 200) throw new Error(`super user: ${ok.status()}`);
    await seeText(page.getByRole("table", { name: "Topics" }), [topic], "the super user sees the topic");
    await page.screenshot({ path: path.join(shots, "auth-admin-topics.png"), fullPage: true });
    log("ok: the super user sees the topic");

    // A user without ACLs: signed in, but refused, and told which permission is missing.
    page = await open(credentials(env("SKIFF_USER")));
    await page.goto(`${base}/#/topics/${encodeURIComponent(topic)}`);
    await seeText(page.locator("body"), ["TOPIC_AUTHORIZATION_FAILED", "Not allowed", "DESCRIBE"], "the refusal of the topic page");
    await page.screenshot({ path: path.join(shots, "auth-refused.png"), fullPage: true });
    log("ok: a user without ACLs sees the refusal");
    if (problems.length) throw new Error(problems.join("\n"));
  } catch (e) {
    if (page) await page.screenshot({ path: path.join(shots, "auth-failure.png"), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
  process.stdout.write("PASS\n");
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`${e.stack ?? e}\n`);
    process.exit(1);
  },
);

// The console's click-through in headless Chromium, driven by playwright-core over the DevTools
// Protocol. Started by tests/console_browser.rs, which owns the `skiff dev` node and the Kafka
// clients; this script asks it for Kafka-side work with one line on stdout,
//   NEED produce        (the test produces more records into the demo topic)
//   NEED consume N      (Kafka's console consumer reads N records in the demo group and commits)
// and waits for `OK` on stdin. Every step asserts on what the page shows. `PASS` ends it.
//
// Environment: SKIFF_CONSOLE_URL (http://127.0.0.1:PORT), SKIFF_CHROMIUM (the browser),
// SKIFF_NODE_MODULES (where playwright-core is), SKIFF_SCREENSHOTS (directory for the PNGs),
// SKIFF_TOPIC and SKIFF_GROUP (names the Rust side uses too).
"use strict";

const path = require("node:path");
const fs = require("node:fs");
const readline = require("node:readline");

const base = need_env("SKIFF_CONSOLE_URL");
const shots = need_env("SKIFF_SCREENSHOTS");
const topic = need_env("SKIFF_TOPIC");
const group = need_env("SKIFF_GROUP");
const { chromium } = require(path.join(need_env("SKIFF_NODE_MODULES"), "playwright-core"));

/** How long one assertion may wait for the page (polls run every 2 s). */
const STEP_MS = 20_000;

function need_env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (tests/console_browser.rs sets it)`);
  return v;
}

const input = readline.createInterface({ input: process.stdin });
const answers = [];
const waiting = [];
input.on("line", (line) => (waiting.length ? waiting.shift()(line) : answers.push(line)));

/** Asks the Rust side for Kafka work and waits for its `OK`. */
async function ask(what) {
  process.stdout.write(`NEED ${what}\n`);
  const line = answers.length ? answers.shift() : await new Promise((r) => waiting.push(r));
  if (line.trim() !== "OK") throw new Error(`the test could not ${what}: ${line}`);
}

function log(msg) {
  process.stderr.write(`[browser ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** Retries `check` (which returns a truthy value or throws) until it passes or `ms` elapse. */
async function eventually(what, check, ms = STEP_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
      last = new Error("not yet");
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not seen within ${ms} ms (${last?.message ?? last})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Waits until the locator's text matches `want` (string: contains; RegExp: test). */
async function seeText(locator, want, what) {
  return eventually(what ?? `text ${want}`, async () => {
    const text = await locator.innerText({ timeout: 1000 });
    const ok = typeof want === "string" ? text.includes(want) : want.test(text);
    if (!ok) throw new Error(`shown: ${JSON.stringify(text.slice(0, 400))}`);
    return true;
  });
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: need_env("SKIFF_CHROMIUM"),
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"],
  });
  const problems = [];
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 }, timezoneId: "UTC", locale: "en-GB" });
  page.setDefaultTimeout(STEP_MS);
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // Failed API calls log "Failed to load resource" (the error step causes one on purpose);
    // anything else at error level (a CSP violation, a script error) fails the test.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`console: ${m.text()}`);
  });
  // Loopback only: any request that leaves the console's origin is refused and fails the test.
  const origin = new URL(base).origin;
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(origin + "/")) return route.continue();
    problems.push(`request outside the console's origin: ${url}`);
    return route.abort();
  });

  const shot = (name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  const nav = (name) => page.getByRole("navigation", { name: "Main" }).getByRole("link", { name });
  /** The offsets the message browser lists, in the order shown. */
  const seeOffsets = (want) =>
    eventually(`offsets ${want}`, async () => {
      const shown = await page.getByRole("table", { name: "Records" }).locator("tbody tr").evaluateAll((rows) => rows.map((r) => Number(r.dataset.offset)));
      if (JSON.stringify(shown) !== JSON.stringify(want)) throw new Error(`shown: ${shown}`);
      return true;
    });
  let current = "start";
  const step = async (name, body) => {
    current = name;
    const t = Date.now();
    await body();
    log(`ok: ${name} (${Date.now() - t} ms)`);
  };

  try {
    await step("the cluster page shows a live broker and the Raft leader", async () => {
      await page.goto(`${base}/`);
      const brokers = page.getByRole("table", { name: "Brokers" });
      await seeText(brokers.locator("tbody tr").first(), /live/);
      await seeText(page.getByRole("region", { name: "Controllers (Raft)" }), /Leader\s+controller 1/);
      await seeText(page.getByRole("table", { name: "Voters" }), /leader/);
      // Security is disabled in `skiff dev`: the ACL and SCRAM pages are hidden, not broken.
      if (await nav("ACLs").isVisible()) throw new Error("the ACLs link is shown while security is disabled");
      if (await nav("SCRAM users").isVisible()) throw new Error("the SCRAM users link is shown while security is disabled");
    });

    await step("create a topic", async () => {
      await nav("Topics").click();
      const form = page.getByRole("form", { name: "Create topic" });
      await form.getByLabel("Name").fill(topic);
      await form.getByLabel("Partitions").fill("1");
      await form.getByRole("button", { name: "Create topic" }).click();
      await seeText(form, `Created topic ${topic}.`);
      const row = page.getByRole("table", { name: "Topics" }).locator(`tr[data-key="${topic}"]`);
      await seeText(row.locator('[data-col="partitions"]'), "1");
      await seeText(row.locator('[data-col="cleanup"]'), "delete");
    });

    await step("the API's error is shown when the topic exists already", async () => {
      const form = page.getByRole("form", { name: "Create topic" });
      await form.getByLabel("Name").fill(topic);
      await form.getByRole("button", { name: "Create topic" }).click();
      await seeText(form.getByRole("alert"), /TOPIC_ALREADY_EXISTS/);
      await form.getByLabel("Name").fill("");
      await page.evaluate(() => document.querySelector('form[aria-label="Create topic"]').reset());
    });

    await step("produce a message from the messages page", async () => {
      await page.goto(`${base}/#/messages?topic=${encodeURIComponent(topic)}&partition=0`);
      const form = page.getByRole("form", { name: "Produce a test message" });
      await form.getByLabel("Partition").fill("0");
      await form.getByLabel("Key").fill("order-1");
      await form.getByLabel("Value").fill('{"id":1,"item":"coffee","paid":true}');
      await form.getByLabel("Headers").fill("source=console");
      await form.getByRole("button", { name: "Produce message" }).click();
      await seeText(form, `Produced to ${topic} partition 0 at offset 0.`);
    });

    await step("find it in the message browser, JSON pretty-printed", async () => {
      const first = page.locator('tr.record[data-offset="0"]');
      await seeText(first.locator('[data-part="key"]'), "order-1");
      // Pretty-printed: one member per line.
      await seeText(first.locator('[data-part="value"] pre.json'), /\{\n\s+"id": 1,\n\s+"item": "coffee",/);
      await seeText(first.locator('[data-part="headers"]'), "source: console");
    });

    await step("more records arrive (text, JSON, binary) and the newest-first view follows live", async () => {
      await ask("produce");
      await seeOffsets([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
      await seeText(page.locator('tr.record[data-offset="9"] [data-part="value"]'), /binary[\s\S]*00000000: 00ff 1080 7f01 fe02/);
      await seeText(page.locator('tr.record[data-offset="9"] [data-part="headers"]'), "content-type: application/octet-stream");
      await seeText(page.locator('tr.record[data-offset="4"] [data-part="value"] pre.json'), /\{\n\s+"id": 5,\n\s+"item": "tea",/);
      await seeText(page.locator('tr.record[data-offset="5"] [data-part="value"] pre.text'), /^plain text note 6$/);
    });

    await step("browse from an offset and from a time, oldest first", async () => {
      const form = page.getByRole("form", { name: "Browse messages" });
      await form.getByLabel(/^Start/).selectOption("offset");
      await form.getByLabel("Offset or time").fill("3");
      await form.getByLabel(/^Order/).selectOption("oldest");
      await form.getByRole("button", { name: "Show messages" }).click();
      await seeOffsets([3, 4, 5, 6, 7, 8, 9]);
      // From a time: the first record at or after it (ListOffsets' rule), here the log start.
      await form.getByLabel(/^Start/).selectOption("timestamp");
      await form.getByLabel("Offset or time").fill("1970-01-01T00:00:00Z");
      await form.getByRole("button", { name: "Show messages" }).click();
      await seeOffsets([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      // A time after every record: nothing to show, said plainly.
      await form.getByLabel("Offset or time").fill(new Date(Date.now() + 3_600_000).toISOString());
      await form.getByRole("button", { name: "Show messages" }).click();
      await seeText(page.getByRole("region", { name: "Records" }), "No messages here.");
      // Back to the newest first for the screenshot (shows JSON, text and binary values).
      await form.getByLabel(/^Start/).selectOption("newest");
      await form.getByLabel("Offset or time").fill("");
      await form.getByRole("button", { name: "Show messages" }).click();
      await seeOffsets([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
      await page.mouse.move(0, 0);
      await shot("messages");
    });

    await step("a consumer group appears with its lag once it has consumed some", async () => {
      await ask("consume 4");
      await nav("Consumer groups").click();
      const row = page.getByRole("table", { name: "Consumer groups" }).locator(`tr[data-key="${group}"]`);
      await seeText(row.locator('[data-col="lag"]'), "6");
      await row.getByRole("link", { name: group }).click();
      await seeText(page.locator("#total-lag"), "6");
      await seeText(page.getByRole("table", { name: "Lag per partition" }).locator('[data-col="committed"]'), "4");
    });

    await step("the lag falls to 0 as the group consumes the rest (the page refreshes live)", async () => {
      await ask("consume 6");
      await seeText(page.locator("#total-lag"), /^0$/);
      await seeText(page.getByRole("table", { name: "Lag per partition" }).locator('[data-col="committed"]'), "10");
    });

    await step("reset the group's offsets to earliest: the lag is back up", async () => {
      const form = page.getByRole("form", { name: "Reset offsets" });
      await form.getByLabel("Topic").selectOption(topic);
      await form.getByLabel("Reset to").selectOption("earliest");
      await form.getByRole("button", { name: "Reset offsets" }).click();
      await seeText(form, "Offsets reset.");
      await seeText(form.getByRole("table", { name: "Reset result" }).locator("tbody tr").first(), /10\s+0$/);
      await seeText(page.locator("#total-lag"), "10");
      await seeText(page.getByRole("table", { name: "Lag per partition" }).locator('[data-col="committed"]'), /^0$/);
      await page.mouse.move(0, 0);
      await shot("group-reset");
      await nav("Consumer groups").click();
      const row = page.getByRole("table", { name: "Consumer groups" }).locator(`tr[data-key="${group}"]`);
      await seeText(row.locator('[data-col="lag"]'), "10");
      await seeText(row, "consumer (KIP-848)");
      // The classic group the test made beside it (tests/console_browser.rs, `billing`).
      await seeText(page.getByRole("table", { name: "Consumer groups" }).locator('tr[data-key="billing"]'), /classic\s+Empty/);
    });

    await step("a live classic group shows its member, its assignment and its lag falling to 0", async () => {
      await ask("live consumer");
      const row = page.getByRole("table", { name: "Consumer groups" }).locator('tr[data-key="billing"]');
      // A JVM starting and joining: allow more than one step's time.
      await eventually("billing becomes Stable with one member", async () => {
        const text = await row.innerText({ timeout: 1000 });
        if (!/classic\s+Stable\s+1\b/.test(text)) throw new Error(`shown: ${JSON.stringify(text)}`);
        return true;
      }, 60_000);
      await page.mouse.move(0, 0);
      await shot("groups");
      await row.getByRole("link", { name: "billing" }).click();
      const members = page.getByRole("table", { name: "Members" });
      await seeText(members.locator("tbody tr").first(), /orders \[0, 1, 2\]/);
      await seeText(page.locator("#total-lag"), /^0$/);
      await seeText(page.getByRole("table", { name: "Lag per partition" }), /orders\s+2\s+10\s+0\s+10\s+0/);
      // Resetting a group with a live member is refused with Kafka's rule, shown as the API says.
      const form = page.getByRole("form", { name: "Reset offsets" });
      await form.getByLabel("Topic").selectOption("orders");
      await form.getByRole("button", { name: "Reset offsets" }).click();
      await seeText(form.getByRole("alert"), /NON_EMPTY_GROUP/);
      await page.mouse.move(0, 0);
      await shot("group");
      await page.evaluate(() => document.querySelector('form[aria-label="Reset offsets"]').reset());
    });

    await step("a group id with a slash opens its page (routes match before decoding)", async () => {
      // Kafka allows "/" in group ids; the pages link to them encoded (%2F).
      await page.goto(`${base}/#/groups/${encodeURIComponent("team/a")}`);
      await seeText(page.locator("h1"), "Group team/a");
    });

    await step("edit a topic config and add partitions on the topic page", async () => {
      await page.goto(`${base}/#/topics/${encodeURIComponent(topic)}`);
      const configs = page.getByRole("form", { name: "Topic configs" });
      const retention = configs.getByRole("textbox", { name: "retention.ms", exact: true });
      await retention.fill("3600000");
      // A poll comes and goes (every 2 s): the page pauses and keeps what was typed.
      await seeText(page.getByRole("status"), "Paused while you edit");
      await page.waitForTimeout(2500);
      if ((await retention.inputValue()) !== "3600000") throw new Error("a refresh overwrote the config being edited");
      await configs.getByRole("button", { name: "Save configs" }).click();
      await seeText(page.getByRole("region", { name: "Configs" }), "Saved retention.ms.");
      await seeText(configs.locator('tr[data-key="retention.ms"]'), "set on topic");
      const add = page.getByRole("form", { name: "Add partitions" });
      await add.getByLabel("New partition count").fill("2");
      await add.getByRole("button", { name: "Add partitions" }).click();
      await seeText(add, "The topic now has 2 partitions.");
      const parts = page.getByRole("table", { name: "Partitions" });
      await seeText(parts.locator('tr[data-key="1"] [data-col="leader"]'), "broker 1");
      await seeText(parts.locator('tr[data-key="0"] [data-col="end"]'), "10");
      await page.mouse.move(0, 0);
      await shot("topic");
    });

    await step("create and delete a scratch topic", async () => {
      const scratch = `${topic}-scratch`;
      await nav("Topics").click();
      const form = page.getByRole("form", { name: "Create topic" });
      await form.getByLabel("Name").fill(scratch);
      await form.getByLabel("Partitions").fill("3");
      await form.getByLabel("Cleanup policy").selectOption("compact");
      await form.getByRole("button", { name: "Create topic" }).click();
      await form.getByRole("link", { name: scratch }).click();
      const del = page.getByRole("form", { name: "Delete topic" });
      const button = del.getByRole("button", { name: "Delete topic" });
      if (await button.isEnabled()) throw new Error("Delete is enabled before the name is typed");
      await del.getByLabel(/to confirm/).fill(scratch);
      await button.click();
      await page.waitForURL(/#\/topics$/);
      const list = page.getByRole("table", { name: "Topics" });
      await seeText(list, topic);
      await eventually("the scratch topic leaves the list", async () => (await list.locator(`tr[data-key="${scratch}"]`).count()) === 0);
      // The list the screenshot shows: the demo topic with its new retention.
      await seeText(list.locator(`tr[data-key="${topic}"] [data-col="retention"]`), "1 h");
      await page.mouse.move(0, 0);
      await shot("topics");
    });

    await step("the cluster page counts the stored objects and their cost", async () => {
      await nav("Cluster").click();
      await seeText(page.getByRole("table", { name: "Estimated cost per topic" }), topic);
      await page.mouse.move(0, 0);
      await shot("cluster");
    });

    if (problems.length) throw new Error(`the page reported problems:\n  ${problems.join("\n  ")}`);
  } catch (e) {
    await page.screenshot({ path: path.join(shots, "failure.png"), fullPage: true }).catch(() => {});
    const text = await page.locator("body").innerText().catch(() => "<no page text>");
    throw new Error(`step "${current}" failed: ${e.message}\n--- page (${page.url()}) ---\n${text.slice(0, 3000)}\n--- problems ---\n${problems.join("\n")}\n(screenshot: ${path.join(shots, "failure.png")})`);
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

// Messages: browse one partition from an offset or a timestamp, newest or oldest first; keys,
// values and headers shown as text, JSON pretty-printed, binary as hex. Produce a test message.
// The view is in the hash (#/messages?topic=t&partition=0&from=offset&at=42) so it can be
// linked; while it shows the newest messages it refreshes live.

import { get, post, seg } from "../api.js";
import { badge, card, field, fmtBytes, fmtNumber, fmtTime, h, onSubmit, update } from "../ui.js";

export const title = "Messages";

const FROM = [
  ["newest", "Newest first"],
  ["oldest", "Oldest first"],
  ["offset", "From an offset"],
  ["timestamp", "From a time"],
];

export function mount(ctx) {
  const q = ctx.query;
  ctx.view = {
    topic: q.get("topic") ?? "",
    partition: Number(q.get("partition") ?? 0),
    from: q.get("from") ?? "newest",
    at: q.get("at") ?? "",
    order: q.get("order") ?? (q.get("from") === "newest" || !q.get("from") ? "newest" : "oldest"),
    limit: Number(q.get("limit") ?? 20),
  };
  ctx.records = [];
  ctx.next = null;
  ctx.pages = 0;
  ctx.list = h("div", { class: "region", id: "records" });
  ctx.meta = h("div", { class: "region" });
  ctx.more = h("div", {});

  const topicSelect = h("select", { name: "topic", required: true }, h("option", { value: "" }, "Loading topics…"));
  ctx.topicSelect = topicSelect;
  const at = h("input", { name: "at", autocomplete: "off", value: ctx.view.at, placeholder: "offset or 2026-12-07T10:00Z" });
  const browse = h(
    "form",
    { class: "inline-form", "aria-label": "Browse messages" },
    field("Topic", topicSelect),
    field("Partition", h("input", { name: "partition", type: "number", min: 0, value: String(ctx.view.partition), required: true })),
    field("Start", h("select", { name: "from" }, FROM.map(([v, label]) => h("option", { value: v, selected: v === ctx.view.from }, label)))),
    field("Offset or time", at),
    field(
      "Order",
      h(
        "select",
        { name: "order" },
        h("option", { value: "newest", selected: ctx.view.order === "newest" }, "Newest first"),
        h("option", { value: "oldest", selected: ctx.view.order === "oldest" }, "Oldest first"),
      ),
    ),
    field("Limit", h("input", { name: "limit", type: "number", min: 1, max: 500, value: String(ctx.view.limit) })),
    h("button", { type: "submit" }, "Show messages"),
  );
  // "Newest first" and "Oldest first" imply their order; only an offset or a time leaves it open.
  browse.addEventListener("change", (event) => {
    const from = browse.elements.from.value;
    if (event.target.name === "from" && (from === "newest" || from === "oldest")) browse.elements.order.value = from;
  });
  onSubmit(browse, async (f) => {
    const d = new FormData(f);
    let from = String(d.get("from"));
    let order = String(d.get("order"));
    if (from === "newest") order = "newest";
    if (from === "oldest") order = "oldest";
    ctx.view = { topic: String(d.get("topic")), partition: Number(d.get("partition")), from, at: String(d.get("at")).trim(), order, limit: Number(d.get("limit") || 20) };
    const params = new URLSearchParams({ topic: ctx.view.topic, partition: String(ctx.view.partition), from, order });
    if (ctx.view.at) params.set("at", ctx.view.at);
    // Keeps the view linkable without re-mounting the page.
    history.replaceState(null, "", `#/messages?${params}`);
    ctx.pages = 0;
    await load(ctx, true);
    return null;
  });

  const produce = h(
    "form",
    { class: "stack-form", "aria-label": "Produce a test message" },
    h("div", { class: "row" }, field("Partition", h("input", { name: "partition", type: "number", min: 0, placeholder: "partitioner" })), field("Key", h("input", { name: "key", autocomplete: "off" }))),
    field("Value", h("textarea", { name: "value", rows: 3 })),
    field("Headers", h("textarea", { name: "headers", rows: 2, placeholder: "one per line: name=value" })),
    h("button", { type: "submit" }, "Produce message"),
  );
  onSubmit(
    produce,
    async (f) => {
      const d = new FormData(f);
      if (!ctx.view.topic) throw new Error("Choose a topic first.");
      const headers = String(d.get("headers"))
        .split("\n")
        .map((l) => l.trim())
        .filter(Boolean)
        .map((l) => {
          const i = l.indexOf("=");
          return i < 0 ? { key: l, value: null } : { key: l.slice(0, i).trim(), value: l.slice(i + 1) };
        });
      const body = { key: d.get("key") === "" ? null : String(d.get("key")), value: String(d.get("value")), headers };
      if (d.get("partition") !== "") body.partition = Number(d.get("partition"));
      const r = await post(`/topics/${seg(ctx.view.topic)}/messages`, body);
      f.reset();
      return h("p", { class: "ok-line" }, `Produced to ${r.topic} partition ${r.partition} at offset ${r.offset}.`);
    },
    async () => {
      if (ctx.view.from === "newest") await load(ctx, true);
    },
  );

  ctx.root.append(
    h("h1", {}, "Messages"),
    h("section", { class: "card", "aria-label": "Browse" }, browse),
    h("div", { class: "grid messages" }, h("section", { class: "card", "aria-label": "Records" }, ctx.meta, ctx.list, ctx.more), card("Produce a test message", produce)),
  );
  ctx.topicsLoaded = loadTopics(ctx);
}

async function loadTopics(ctx) {
  try {
    const { topics } = await get("/topics?internal=true");
    const names = topics.map((t) => t.name);
    if (!ctx.view.topic) ctx.view.topic = topics.find((t) => !t.internal)?.name ?? "";
    ctx.topicSelect.replaceChildren(
      ...(names.length ? [] : [h("option", { value: "" }, "No topics")]),
      ...names.map((n) => h("option", { value: n, selected: n === ctx.view.topic }, n)),
    );
    if (ctx.view.topic) ctx.topicSelect.value = ctx.view.topic;
  } catch (err) {
    ctx.topicSelect.replaceChildren(h("option", { value: "" }, `Cannot list topics (${err.code})`));
  }
}

/** The API query for the view's first page, or for the page after `next`. */
function query(view, next) {
  const p = new URLSearchParams({ order: view.order, limit: String(view.limit) });
  if (next !== null && next !== undefined) {
    p.set("offset", String(next));
  } else if (view.from === "offset" && view.at !== "") {
    p.set("offset", view.at);
  } else if (view.from === "timestamp" && view.at !== "") {
    const ms = /^\d+$/.test(view.at) ? Number(view.at) : Date.parse(view.at);
    if (Number.isNaN(ms)) throw Object.assign(new Error(`“${view.at}” is not a time (use 2026-12-07T10:00:00Z or epoch milliseconds).`), { code: "INVALID_TIME" });
    p.set("timestamp", String(ms));
  }
  return `/topics/${seg(view.topic)}/partitions/${view.partition}/messages?${p}`;
}

async function load(ctx, first) {
  await ctx.topicsLoaded;
  if (!ctx.view.topic) {
    update(ctx.list, h("p", { class: "muted" }, "Choose a topic."));
    return;
  }
  const page = await get(query(ctx.view, first ? null : ctx.next));
  ctx.records = first ? page.records : ctx.records.concat(page.records);
  ctx.next = page.next_offset;
  ctx.pages = first ? 1 : ctx.pages + 1;
  update(
    ctx.meta,
    h(
      "p",
      { class: "muted" },
      `${ctx.view.topic} partition ${page.partition} · log start ${fmtNumber(page.log_start_offset)} · high watermark ${fmtNumber(page.high_watermark)} · `,
      `${ctx.records.length} shown, ${page.order === "newest" ? "newest" : "oldest"} first`,
    ),
  );
  update(
    ctx.list,
    ctx.records.length
      ? h(
          "table",
          { class: "records", "aria-label": "Records" },
          h("thead", {}, h("tr", {}, ["Offset", "Time", "Key", "Value", "Headers"].map((c) => h("th", { scope: "col", class: c === "Offset" ? "num" : null }, c)))),
          h("tbody", {}, ctx.records.map(record)),
        )
      : h("p", { class: "muted empty" }, "No messages here."),
  );
  const canMore = ctx.next !== null && ctx.next !== undefined && page.records.length > 0;
  ctx.more.replaceChildren(
    canMore
      ? h(
          "button",
          {
            type: "button",
            onclick: async (e) => {
              e.target.disabled = true;
              try {
                await load(ctx, false);
              } finally {
                e.target.disabled = false;
              }
            },
          },
          page.order === "newest" ? "Load older messages" : "Load newer messages",
        )
      : "",
  );
}

function record(r) {
  return h(
    "tr",
    { class: "record", "data-offset": String(r.offset) },
    h("td", { class: "num" }, h("strong", {}, String(r.offset))),
    h("td", { class: "when" }, fmtTime(r.timestamp_ms), h("br", {}), h("small", { class: "muted" }, r.timestamp_type === "LOG_APPEND_TIME" ? "log append time" : "create time", ` · ${fmtBytes(r.size_bytes)}`)),
    h("td", { "data-part": "key" }, payload(r.key)),
    h("td", { "data-part": "value" }, payload(r.value)),
    h(
      "td",
      { "data-part": "headers" },
      r.headers?.length ? h("ul", { class: "headers" }, r.headers.map((hd) => h("li", {}, h("code", {}, hd.key), ": ", inline(hd.value)))) : h("span", { class: "muted" }, "—"),
    ),
  );
}

/** A header value on one line. */
function inline(p) {
  if (p === null || p === undefined) return h("span", { class: "muted" }, "null");
  if (p.encoding === "binary") return h("code", { class: "hex" }, `0x${p.hex ?? ""}`);
  return h("span", {}, p.text ?? "");
}

/** Text as is, JSON pretty-printed, binary as hex; the kind is named unless it is plain text. */
function payload(p) {
  if (p === null || p === undefined) return h("span", { class: "muted" }, "null");
  const tag = p.encoding === "text" ? null : badge(p.encoding, p.encoding);
  const cut = p.truncated ? h("small", { class: "muted" }, ` first 64 KiB of ${fmtBytes(p.size_bytes)}`) : null;
  const head = tag || cut ? h("div", { class: "payload-head" }, tag, cut) : null;
  if (p.encoding === "json") return h("div", {}, head, h("pre", { class: "json" }, p.json));
  if (p.encoding === "binary") return h("div", {}, head, h("pre", { class: "hex" }, hex(p.hex ?? "")));
  return h("div", {}, head, h("pre", { class: "text" }, p.text ?? ""));
}

/** Groups hex into 2-byte words, 16 bytes a line, like xxd. */
function hex(s) {
  const lines = [];
  for (let i = 0; i < s.length; i += 32) {
    const line = s.slice(i, i + 32).match(/.{1,4}/g) ?? [];
    lines.push(`${(i / 2).toString(16).padStart(8, "0")}: ${line.join(" ")}`);
  }
  return lines.join("\n");
}

export async function refresh(ctx) {
  // Live only on the first page of the newest messages: a reader paging back is not moved.
  if (ctx.pages === 0 || (ctx.view.from === "newest" && ctx.pages <= 1)) await load(ctx, true);
}

export default { title, mount, refresh };

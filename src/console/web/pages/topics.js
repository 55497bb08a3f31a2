// Topics: the list (partitions, size, messages, message rate, retention, cleanup policy) and
// the create form. Deleting, configs and partitions are on each topic's page (topic.js).

import { get, post } from "../api.js";
import { field, fmtBytes, fmtDuration, fmtNumber, fmtRate, h, onSubmit, table, update } from "../ui.js";

export const title = "Topics";

export function mount(ctx) {
  const list = h("div", { class: "region", id: "topics-list" });
  const internal = h("input", { type: "checkbox", name: "internal" });
  internal.addEventListener("change", () => ctx.refresh());
  ctx.internal = internal;
  ctx.list = list;

  const form = h(
    "form",
    { class: "inline-form", "aria-label": "Create topic" },
    field("Name", h("input", { name: "name", required: true, autocomplete: "off", pattern: "[a-zA-Z0-9._\\-]+", maxlength: 249 })),
    field("Partitions", h("input", { name: "partitions", type: "number", min: 1, value: "1", required: true })),
    field(
      "Cleanup policy",
      h(
        "select",
        { name: "cleanup" },
        h("option", { value: "" }, "default"),
        h("option", { value: "delete" }, "delete"),
        h("option", { value: "compact" }, "compact"),
        h("option", { value: "compact,delete" }, "compact,delete"),
      ),
    ),
    field("Retention (ms)", h("input", { name: "retention", type: "number", min: -1, placeholder: "default" })),
    h("button", { type: "submit" }, "Create topic"),
  );
  onSubmit(
    form,
    async (f) => {
      const data = new FormData(f);
      const configs = {};
      if (data.get("cleanup")) configs["cleanup.policy"] = data.get("cleanup");
      if (data.get("retention")) configs["retention.ms"] = String(data.get("retention"));
      const name = String(data.get("name")).trim();
      const created = await post("/topics", { name, partitions: Number(data.get("partitions")), configs });
      f.reset();
      return h(
        "p",
        { class: "ok-line" },
        "Created topic ",
        h("a", { href: `#/topics/${encodeURIComponent(created.name ?? name)}` }, created.name ?? name),
        ".",
      );
    },
    () => ctx.refresh(),
  );

  ctx.root.append(
    h("h1", {}, "Topics"),
    h("section", { class: "card", "aria-label": "Create a topic" }, h("h2", {}, "Create a topic"), form),
    h(
      "section",
      { class: "card", "aria-label": "All topics" },
      h("div", { class: "card-head" }, h("h2", {}, "All topics"), h("label", { class: "check" }, internal, " Show internal topics")),
      list,
    ),
  );
}

export async function refresh(ctx) {
  const data = await get(`/topics?internal=${ctx.internal.checked}`);
  update(
    ctx.list,
    h(
      "div",
      {},
      table({
        label: "Topics",
        key: (t) => t.name,
        columns: [
          { label: "Name", id: "name", value: (t) => h("a", { href: `#/topics/${encodeURIComponent(t.name)}` }, t.name, t.internal ? " (internal)" : "") },
          { label: "Partitions", id: "partitions", value: (t) => fmtNumber(t.partitions), num: true },
          { label: "Size", id: "size", value: (t) => fmtBytes(t.size_bytes), num: true },
          { label: "Messages", id: "messages", value: (t) => fmtNumber(t.messages), num: true },
          { label: "Message rate", id: "rate", value: (t) => fmtRate(t.message_rate, " msg/s"), num: true },
          { label: "Retention", id: "retention", value: (t) => fmtDuration(t.retention_ms) },
          { label: "Cleanup policy", id: "cleanup", value: (t) => t.cleanup_policy },
        ],
        rows: data.topics ?? [],
        empty: "No topics yet: create one above.",
      }),
      data.truncated ? h("p", { class: "muted" }, "Only the first 10,000 topics are listed.") : null,
    ),
  );
}

export default { title, mount, refresh };

// One topic: its partitions (leader, epoch, log start/end, size), its configs (edit, reset to
// default), adding partitions and deleting the topic.

import { del, get, patch, post, seg } from "../api.js";
import { badge, card, errorBox, facts, field, fmtBytes, fmtDuration, fmtNumber, fmtRate, h, onSubmit, table, update } from "../ui.js";

export const title = (ctx) => `Topic ${ctx.params.name}`;

export function mount(ctx) {
  const name = ctx.params.name;
  ctx.summary = h("div", { class: "region" });
  ctx.partitions = h("div", { class: "region" });
  ctx.configs = h("div", { class: "region" });
  ctx.configResult = h("div", { class: "form-result", "aria-live": "polite" });

  const addForm = h(
    "form",
    { class: "inline-form", "aria-label": "Add partitions" },
    field("New partition count", h("input", { name: "count", type: "number", min: 1, required: true })),
    h("button", { type: "submit" }, "Add partitions"),
  );
  onSubmit(
    addForm,
    async (f) => {
      const count = Number(new FormData(f).get("count"));
      await post(`/topics/${seg(name)}/partitions`, { count });
      f.reset();
      return h("p", { class: "ok-line" }, `The topic now has ${count} partitions.`);
    },
    () => ctx.refresh(),
  );

  const confirm = h("input", { name: "confirm", autocomplete: "off", required: true });
  const deleteButton = h("button", { type: "submit", class: "danger", disabled: true }, "Delete topic");
  confirm.addEventListener("input", () => {
    deleteButton.disabled = confirm.value !== name;
  });
  const deleteForm = h("form", { class: "inline-form", "aria-label": "Delete topic" }, field(`Type “${name}” to confirm`, confirm), deleteButton);
  onSubmit(deleteForm, async () => {
    await del(`/topics/${seg(name)}`);
    location.hash = "#/topics";
    return null;
  });

  ctx.root.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/topics" }, "Topics"), " / ", name),
    h("h1", {}, "Topic ", h("span", { class: "mono" }, name)),
    ctx.summary,
    card("Partitions", ctx.partitions, h("h3", {}, "Add partitions"), addForm),
    card("Configs", ctx.configs, ctx.configResult),
    h("section", { class: "card danger-zone", "aria-label": "Delete this topic" }, h("h2", {}, "Delete this topic"), h("p", {}, "Deletes every partition and its data. This cannot be undone."), deleteForm),
  );
}

export async function refresh(ctx) {
  const name = ctx.params.name;
  const t = await get(`/topics/${seg(name)}`);
  update(
    ctx.summary,
    h(
      "div",
      { class: "card" },
      facts([
        ["Id", h("code", {}, t.id)],
        ["Partitions", fmtNumber(t.partitions?.length)],
        ["Size", fmtBytes(t.size_bytes)],
        ["Messages", fmtNumber(t.messages)],
        ["Message rate", fmtRate(t.message_rate, " msg/s")],
        ["Retention", fmtDuration(t.retention_ms)],
        ["Cleanup policy", t.cleanup_policy],
        ["Browse", h("a", { href: `#/messages?topic=${encodeURIComponent(name)}` }, "Messages in this topic")],
      ]),
    ),
  );
  update(
    ctx.partitions,
    table({
      label: "Partitions",
      key: (p) => String(p.partition),
      columns: [
        { label: "Partition", value: (p) => String(p.partition), num: true },
        { label: "Leader", id: "leader", value: (p) => (p.leader >= 0 ? `broker ${p.leader}` : badge("none", "warn")) },
        { label: "Leader epoch", value: (p) => fmtNumber(p.leader_epoch), num: true },
        { label: "Log start", id: "start", value: (p) => fmtNumber(p.log_start_offset), num: true },
        { label: "Log end", id: "end", value: (p) => fmtNumber(p.log_end_offset ?? p.high_watermark), num: true },
        { label: "Messages", value: (p) => fmtNumber((p.high_watermark ?? 0) - (p.log_start_offset ?? 0)), num: true },
        { label: "Size", value: (p) => fmtBytes(p.size_bytes), num: true },
        {
          label: "Browse",
          value: (p) => h("a", { href: `#/messages?topic=${encodeURIComponent(name)}&partition=${p.partition}` }, `Messages in partition ${p.partition}`),
        },
      ],
      rows: t.partitions ?? [],
    }),
  );
  // The configs form is rebuilt only while nobody edits it (the shell pauses polls then).
  update(ctx.configs, configForm(ctx, t.configs ?? []));
}

function configForm(ctx, configs) {
  const name = ctx.params.name;
  // The topic's own overrides first: they are what an operator usually looks for.
  const sorted = [...configs].sort(
    (a, b) => (b.source === "DYNAMIC_TOPIC_CONFIG") - (a.source === "DYNAMIC_TOPIC_CONFIG") || a.name.localeCompare(b.name),
  );
  const rows = sorted.map((c) => {
    const input = h("input", {
      name: c.name,
      value: c.sensitive ? "" : c.value ?? "",
      "data-original": c.value ?? "",
      "aria-label": c.name,
      readonly: c.read_only,
      placeholder: c.value === null ? "null" : null,
    });
    const overridden = c.source === "DYNAMIC_TOPIC_CONFIG";
    const reset = overridden
      ? h("button", { type: "button", class: "link", "data-reset": c.name, "aria-label": `Reset ${c.name} to its default` }, "Reset to default")
      : null;
    return h(
      "tr",
      { "data-key": c.name },
      h("th", { scope: "row" }, h("code", {}, c.name)),
      h("td", {}, input),
      h("td", {}, overridden ? badge("set on topic", "ok") : h("span", { class: "muted" }, sourceName(c.source))),
      h("td", {}, reset),
    );
  });
  const form = h(
    "form",
    { "aria-label": "Topic configs" },
    h(
      "table",
      { class: "configs", "aria-label": "Configs" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Config"), h("th", { scope: "col" }, "Value"), h("th", { scope: "col" }, "Source"), h("th", { scope: "col" }, ""))),
      h("tbody", {}, rows),
    ),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Save configs"), h("button", { type: "reset" }, "Discard changes")),
  );
  onSubmit(
    form,
    async (f) => {
      const set = {};
      for (const input of f.querySelectorAll("input[data-original]")) {
        if (!input.readOnly && input.value !== input.dataset.original) set[input.name] = input.value;
      }
      if (!Object.keys(set).length) return h("p", { class: "muted" }, "Nothing changed.");
      await patch(`/topics/${seg(name)}/configs`, { set });
      return h("p", { class: "ok-line" }, `Saved ${Object.keys(set).join(", ")}.`);
    },
    () => ctx.refresh(),
    ctx.configResult,
  );
  form.addEventListener("click", async (event) => {
    const key = event.target?.dataset?.reset;
    if (!key) return;
    const out = ctx.configResult;
    try {
      await patch(`/topics/${seg(name)}/configs`, { delete: [key] });
      form.classList.remove("editing");
      out.replaceChildren(h("p", { class: "ok-line" }, `Reset ${key} to its default.`));
      ctx.refresh();
    } catch (err) {
      out.replaceChildren(errorBox(err));
    }
  });
  return form;
}

function sourceName(source) {
  return (
    {
      DYNAMIC_BROKER_CONFIG: "broker (dynamic)",
      DYNAMIC_DEFAULT_BROKER_CONFIG: "cluster default (dynamic)",
      STATIC_BROKER_CONFIG: "broker config",
      DEFAULT_CONFIG: "default",
    }[source] ?? source
  );
}

export default { title, mount, refresh };

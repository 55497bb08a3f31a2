// One consumer group: state, members and their assignments, committed offsets with lag per
// partition and in total, and resetting offsets with kafka-consumer-groups.sh's rules (the API
// refuses while the group has members).

import { get, post, seg } from "../api.js";
import { card, facts, field, fmtNumber, h, onSubmit, table, update } from "../ui.js";
import { stateBadge, typeBadge } from "./groups.js";

export const title = (ctx) => `Group ${ctx.params.id}`;

export function mount(ctx) {
  const id = ctx.params.id;
  ctx.summary = h("div", { class: "region" });
  ctx.members = h("div", { class: "region" });
  ctx.offsets = h("div", { class: "region", id: "group-offsets" });
  ctx.topicSelect = h("select", { name: "topic", required: true });
  ctx.topicNames = "";

  const value = h("input", { name: "value", autocomplete: "off", placeholder: "offset or 2026-12-07T10:00Z" });
  const reset = h(
    "form",
    { class: "inline-form", "aria-label": "Reset offsets" },
    field("Topic", ctx.topicSelect),
    field("Partitions", h("input", { name: "partitions", autocomplete: "off", placeholder: "all" })),
    field(
      "Reset to",
      h(
        "select",
        { name: "to" },
        h("option", { value: "earliest" }, "earliest"),
        h("option", { value: "latest" }, "latest"),
        h("option", { value: "timestamp" }, "timestamp"),
        h("option", { value: "offset" }, "offset"),
      ),
    ),
    field("Offset or time", value),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "dry_run" }), " Dry run"),
    h("button", { type: "submit" }, "Reset offsets"),
  );
  onSubmit(
    reset,
    async (f) => {
      const d = new FormData(f);
      const to = String(d.get("to"));
      const body = { topic: String(d.get("topic")), to, dry_run: d.get("dry_run") === "on" };
      const parts = String(d.get("partitions")).trim();
      if (parts) body.partitions = parts.split(/[\s,]+/).filter(Boolean).map(Number);
      const raw = String(d.get("value")).trim();
      if (to === "offset") body.value = Number(raw);
      if (to === "timestamp") body.value = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
      if ((to === "offset" || to === "timestamp") && (raw === "" || Number.isNaN(body.value))) {
        throw Object.assign(new Error(`Give ${to === "offset" ? "an offset" : "a time (2026-12-07T10:00:00Z or epoch ms)"} to reset to.`), { code: "INVALID_REQUEST" });
      }
      const r = await post(`/groups/${seg(id)}/reset-offsets`, body);
      return h(
        "div",
        {},
        h("p", { class: "ok-line" }, r.dry_run ? "Dry run: nothing was changed. The new offsets would be:" : "Offsets reset."),
        table({
          label: "Reset result",
          key: (p) => `${p.topic}-${p.partition}`,
          columns: [
            { label: "Topic", value: (p) => p.topic },
            { label: "Partition", value: (p) => String(p.partition), num: true },
            { label: "Previous offset", value: (p) => fmtNumber(p.previous_offset), num: true },
            { label: "New offset", value: (p) => fmtNumber(p.new_offset), num: true },
          ],
          rows: r.partitions ?? [],
        }),
      );
    },
    () => ctx.refresh(),
  );

  ctx.root.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/groups" }, "Consumer groups"), " / ", id),
    h("h1", {}, "Group ", h("span", { class: "mono" }, id)),
    ctx.summary,
    card("Lag per partition", ctx.offsets),
    card("Members and assignments", ctx.members),
    card("Reset offsets", h("p", { class: "muted" }, "Like kafka-consumer-groups.sh --reset-offsets: only while the group has no active members. Offsets outside the log are clamped to its start or end."), reset),
  );
}

export async function refresh(ctx) {
  const g = await get(`/groups/${seg(ctx.params.id)}`);
  update(
    ctx.summary,
    h(
      "div",
      { class: "card" },
      facts([
        ["State", stateBadge(g.state)],
        ["Type", typeBadge(g.type)],
        [g.type === "consumer" ? "Assignor" : "Protocol", g.type === "consumer" ? g.assignor : g.protocol],
        // KIP-848 groups have an epoch; a classic group's generation is not in the API.
        g.epoch === null || g.epoch === undefined ? null : ["Group epoch", fmtNumber(g.epoch)],
        ["Coordinator", g.coordinator >= 0 ? `broker ${g.coordinator}` : null],
        ["Members", fmtNumber(g.members?.length ?? 0)],
        ["Total lag", h("strong", { id: "total-lag" }, fmtNumber(g.total_lag))],
      ]),
    ),
  );
  update(
    ctx.offsets,
    table({
      label: "Lag per partition",
      key: (o) => `${o.topic}-${o.partition}`,
      columns: [
        { label: "Topic", value: (o) => h("a", { href: `#/topics/${encodeURIComponent(o.topic)}` }, o.topic) },
        { label: "Partition", value: (o) => String(o.partition), num: true },
        { label: "Committed offset", id: "committed", value: (o) => fmtNumber(o.committed_offset), num: true },
        { label: "Log start", value: (o) => fmtNumber(o.log_start_offset), num: true },
        { label: "End offset", id: "end", value: (o) => fmtNumber(o.end_offset), num: true },
        { label: "Lag", id: "lag", value: (o) => fmtNumber(o.lag), num: true },
        { label: "Member", value: (o) => (o.member_id ? h("code", {}, o.member_id) : "—") },
      ],
      rows: g.offsets ?? [],
      empty: "No committed offsets and no assignments.",
    }),
  );
  update(
    ctx.members,
    table({
      label: "Members",
      key: (m) => m.member_id,
      columns: [
        { label: "Member", value: (m) => h("code", {}, m.member_id) },
        { label: "Client id", value: (m) => m.client_id ?? "—" },
        { label: "Host", value: (m) => m.host ?? "—" },
        { label: "Instance id", value: (m) => m.instance_id ?? "—" },
        { label: "Member epoch", value: (m) => fmtNumber(m.member_epoch), num: true },
        { label: "Assignment", value: (m) => (m.assignments ?? []).map((a) => `${a.topic} [${a.partitions.join(", ")}]`).join("; ") || "—" },
      ],
      rows: g.members ?? [],
      empty: "No active members.",
    }),
  );
  // The topic choices follow the group's offsets; rebuilt only when they change so a choice made
  // in the (paused) form is never reset under the user.
  const names = [...new Set((g.offsets ?? []).map((o) => o.topic))].sort();
  if (names.join("\n") !== ctx.topicNames) {
    const chosen = ctx.topicSelect.value;
    ctx.topicNames = names.join("\n");
    ctx.topicSelect.replaceChildren(...names.map((n) => h("option", { value: n, selected: n === chosen }, n)));
  }
}

export default { title, mount, refresh };

// Consumer groups, classic and KIP-848 ("consumer" type): state, members, topics, total lag.

import { get } from "../api.js";
import { badge, fmtNumber, h, table, update } from "../ui.js";

export const title = "Consumer groups";

export function mount(ctx) {
  ctx.list = h("div", { class: "region", id: "groups-list" });
  ctx.root.append(h("h1", {}, "Consumer groups"), h("section", { class: "card", "aria-label": "All groups" }, ctx.list));
}

export function typeBadge(type) {
  return type === "consumer" ? badge("consumer (KIP-848)", "info") : badge(type || "classic");
}

export function stateBadge(state) {
  const kind = { Stable: "ok", Empty: "", Dead: "warn" }[state] ?? "info";
  return badge(state, kind);
}

export async function refresh(ctx) {
  const { groups } = await get("/groups");
  update(
    ctx.list,
    table({
      label: "Consumer groups",
      key: (g) => g.group_id,
      columns: [
        { label: "Group", id: "group", value: (g) => h("a", { href: `#/groups/${encodeURIComponent(g.group_id)}` }, g.group_id) },
        { label: "Type", value: (g) => typeBadge(g.type) },
        { label: "State", id: "state", value: (g) => stateBadge(g.state) },
        { label: "Members", id: "members", value: (g) => fmtNumber(g.members), num: true },
        { label: "Topics", value: (g) => (g.topics ?? []).join(", ") || "—" },
        { label: "Total lag", id: "lag", value: (g) => fmtNumber(g.total_lag), num: true },
        { label: "Coordinator", value: (g) => (g.coordinator >= 0 ? `broker ${g.coordinator}` : "—") },
      ],
      rows: groups ?? [],
      empty: "No consumer groups yet.",
    }),
  );
}

export default { title, mount, refresh };

// ACLs and SCRAM users. Their links stay hidden while GET /api/v1/cluster says security is
// disabled; a direct link then explains why instead of failing.

import { get } from "../api.js";
import { h, table, update } from "../ui.js";

function disabled(ctx) {
  return !ctx.cluster?.security?.enabled;
}

function page(name, path, columns, key) {
  return {
    title: name,
    mount(ctx) {
      ctx.list = h("div", { class: "region" });
      ctx.root.append(h("h1", {}, name), h("section", { class: "card", "aria-label": name }, ctx.list));
    },
    async refresh(ctx) {
      if (disabled(ctx)) {
        update(ctx.list, h("p", { class: "muted" }, "Security is disabled on this cluster (no SASL): there is nothing to manage here."));
        return;
      }
      const data = await get(path);
      update(ctx.list, table({ label: name, columns, rows: data.items ?? data.acls ?? data.users ?? [], key }));
    },
  };
}

export const acls = page(
  "ACLs",
  "/acls",
  [
    { label: "Principal", value: (a) => a.principal },
    { label: "Resource", value: (a) => `${a.resource_type}:${a.resource_name} (${a.pattern_type})` },
    { label: "Operation", value: (a) => a.operation },
    { label: "Permission", value: (a) => a.permission },
    { label: "Host", value: (a) => a.host },
  ],
  null,
);

export const users = page(
  "SCRAM users",
  "/scram-users",
  [
    { label: "User", value: (u) => u.name },
    { label: "Mechanisms", value: (u) => (u.mechanisms ?? []).map((m) => `${m.mechanism} (${m.iterations} iterations)`).join(", ") },
  ],
  (u) => u.name,
);

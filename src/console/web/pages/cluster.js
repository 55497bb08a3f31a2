// Cluster: brokers (live/fenced, partitions led, rack), the controllers' Raft state (leader,
// term, commit/applied index, lag per voter) and the object store (objects, bytes, PUT/GET
// rates, estimated cost per day and per topic).

import { get } from "../api.js";
import { badge, card, errorBox, facts, fmtAgo, fmtBytes, fmtCount, fmtMoney, fmtNumber, fmtRate, h, table, update } from "../ui.js";

export const title = "Cluster";

export function mount(ctx) {
  ctx.regions = {
    summary: h("div", { class: "region" }),
    brokers: h("div", { class: "region" }),
    controllers: h("div", { class: "region" }),
    store: h("div", { class: "region" }),
    costs: h("div", { class: "region" }),
    features: h("div", { class: "region" }),
  };
  const r = ctx.regions;
  ctx.root.append(
    h("h1", {}, "Cluster"),
    r.summary,
    h(
      "div",
      { class: "grid two" },
      card("Brokers", r.brokers),
      card("Controllers (Raft)", r.controllers),
    ),
    card("Object store", r.store),
    h("div", { class: "grid two" }, card("Estimated cost per topic", r.costs), card("Features", r.features)),
  );
}

export async function refresh(ctx) {
  const [cluster, brokers] = await Promise.all([get("/cluster"), get("/brokers")]);
  const r = ctx.regions;
  const b = cluster.brokers ?? {};
  update(
    r.summary,
    h(
      "div",
      { class: "stats" },
      stat("Cluster id", h("code", {}, cluster.cluster_id)),
      stat("Brokers live", `${fmtNumber(b.live)} of ${fmtNumber(b.total)}`, b.fenced ? "warn" : "ok"),
      stat("Fenced brokers", fmtNumber(b.fenced), b.fenced ? "warn" : null),
      stat("Raft leader", cluster.controller_id >= 0 ? `controller ${cluster.controller_id}` : "unknown", cluster.controller_id >= 0 ? "ok" : "warn"),
      stat("Topics", fmtNumber(cluster.topics?.count)),
      stat("Partitions", fmtNumber(cluster.topics?.partitions)),
      stat("Stored", fmtBytes(cluster.object_store?.bytes)),
      stat("Cost per day (est.)", fmtMoney(cluster.object_store?.cost_per_day?.total)),
    ),
  );
  update(
    r.brokers,
    table({
      label: "Brokers",
      key: (x) => String(x.id),
      columns: [
        { label: "Id", value: (x) => String(x.id), num: true },
        { label: "Address", value: (x) => h("code", {}, x.address ?? `${x.host}:${x.port}`) },
        { label: "Rack", value: (x) => x.rack ?? "—" },
        { label: "Status", id: "status", value: (x) => (x.fenced || !x.live ? badge("fenced", "warn") : badge("live", "ok")) },
        { label: "Partitions led", id: "led", value: (x) => fmtNumber(x.partitions_led), num: true },
        { label: "Coordinator shards", value: (x) => fmtNumber(x.coordinator_shards), num: true },
      ],
      rows: brokers.brokers ?? [],
      empty: "No broker has registered.",
    }),
  );
  update(r.controllers, controllers(cluster.controllers ?? {}, cluster));
  update(r.store, store(cluster.object_store ?? {}));
  const perTopic = [...(cluster.object_store?.per_topic ?? [])].sort((a, b2) => (b2.cost_per_day ?? 0) - (a.cost_per_day ?? 0));
  update(
    r.costs,
    table({
      label: "Estimated cost per topic",
      key: (x) => x.topic,
      columns: [
        { label: "Topic", value: (x) => h("a", { href: `#/topics/${encodeURIComponent(x.topic)}` }, x.topic) },
        { label: "Stored", value: (x) => fmtBytes(x.bytes), num: true },
        // Requests since the broker started, attributed by each object's share of bytes.
        { label: "PUTs", value: (x) => fmtCount(x.puts), num: true },
        { label: "GETs", value: (x) => fmtCount(x.gets), num: true },
        { label: "So far", value: (x) => fmtMoney(x.cost), num: true },
        { label: "Per day", value: (x) => fmtMoney(x.cost_per_day), num: true },
      ],
      rows: perTopic,
      empty: "No topic has stored data yet.",
    }),
  );
  update(
    r.features,
    table({
      label: "Features",
      key: (x) => x.name,
      columns: [
        { label: "Feature", value: (x) => h("code", {}, x.name) },
        { label: "Finalized", value: (x) => fmtNumber(x.finalized_level), num: true },
        { label: "Supported", value: (x) => `${x.min_version}–${x.max_version}`, num: true },
      ],
      rows: cluster.features ?? [],
    }),
  );
}

function stat(label, value, kind) {
  return h("div", { class: `stat ${kind ?? ""}` }, h("span", { class: "stat-label" }, label), h("span", { class: "stat-value" }, value));
}

function controllers(c, cluster) {
  if (c.available === false) {
    return h("div", {}, h("p", {}, badge("unavailable", "warn"), " The controller quorum did not answer."), c.error ? errorBox(c.error) : null);
  }
  return h(
    "div",
    {},
    facts([
      ["Leader", c.leader_id >= 0 ? `controller ${c.leader_id}` : "none"],
      ["Term", fmtNumber(c.term)],
      ["Commit index", fmtNumber(c.commit_index)],
      ["Applied (this broker)", fmtNumber(c.applied_index)],
      c.high_watermark === undefined ? null : ["High watermark", fmtNumber(c.high_watermark)],
      ["Answered by", `broker ${cluster.node_id}`],
    ]),
    table({
      label: "Voters",
      key: (v) => String(v.id),
      columns: [
        { label: "Voter", value: (v) => String(v.id), num: true },
        { label: "Role", value: (v) => (v.leader ? badge("leader", "ok") : badge("follower")) },
        { label: "Log end index", value: (v) => fmtNumber(v.log_end_index), num: true },
        { label: "Lag", id: "lag", value: (v) => fmtNumber(v.lag), num: true },
        { label: "Last fetch", value: (v) => (v.leader ? "—" : fmtAgo(v.last_fetch_ms)) },
      ],
      rows: c.voters ?? [],
      empty: "No voters reported.",
    }),
  );
}

function store(s) {
  const cost = s.cost_per_day ?? {};
  const prices = s.prices ?? {};
  return h(
    "div",
    { class: "grid three" },
    facts([
      ["Objects", fmtNumber(s.objects)],
      ["Bytes", fmtBytes(s.bytes)],
      ["PUT rate", fmtRate(s.puts_per_sec)],
      ["GET rate", fmtRate(s.gets_per_sec)],
    ]),
    facts([
      ["PUTs (since start)", fmtNumber(s.puts)],
      ["GETs (since start)", fmtNumber(s.gets)],
      ["DELETEs / LISTs", `${fmtNumber(s.deletes)} / ${fmtNumber(s.lists)}`],
      ["Failed requests", fmtNumber(s.failures)],
    ]),
    facts([
      ["Cost per day: PUTs", fmtMoney(cost.puts)],
      ["Cost per day: GETs", fmtMoney(cost.gets)],
      ["Cost per day: storage", fmtMoney(cost.storage)],
      ["Cost per day: total", h("strong", {}, fmtMoney(cost.total))],
      [
        "Prices",
        `$${prices.put_per_1000 ?? "?"}/1000 PUT · $${prices.get_per_1000 ?? "?"}/1000 GET · $${prices.storage_per_gb_month ?? "?"}/GB-month`,
      ],
    ]),
  );
}

export default { title, mount, refresh };

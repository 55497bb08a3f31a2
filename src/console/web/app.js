// The console's shell: hash routes to page modules, the ~2 s poll that keeps the shown page
// live, the pause while a form is being edited, and the page-level error banner.
//
// A page module exports `title`, `mount(ctx)` (builds the static parts: headings, forms, empty
// regions) and optionally `refresh(ctx)` (fetches and updates its regions; called at once and
// then every POLL_MS). `ctx` carries the route's params and query, `root` and `cluster` (the
// latest GET /api/v1/cluster, for `security.enabled`).

import { get } from "./api.js";
import { errorBox, h } from "./ui.js";
import cluster from "./pages/cluster.js";
import topics from "./pages/topics.js";
import topic from "./pages/topic.js";
import messages from "./pages/messages.js";
import groups from "./pages/groups.js";
import group from "./pages/group.js";
import { acls, users } from "./pages/security.js";

const POLL_MS = 2000;

const routes = [
  [/^\/?$/, cluster, "cluster"],
  [/^\/cluster$/, cluster, "cluster"],
  [/^\/topics$/, topics, "topics"],
  [/^\/topics\/(?<name>[^/]+)$/, topic, "topics"],
  [/^\/messages$/, messages, "messages"],
  [/^\/groups$/, groups, "groups"],
  [/^\/groups\/(?<id>[^/]+)$/, group, "groups"],
  [/^\/acls$/, acls, "acls"],
  [/^\/users$/, users, "users"],
];

const state = { page: null, ctx: null, timer: null, running: false, again: false, generation: 0, cluster: null };

function parseHash() {
  // Kept encoded: a group id or topic name may hold "/" (encoded %2F by the pages), which must
  // not split the path before the route matches; `route` decodes each captured parameter.
  const hash = location.hash.replace(/^#/, "").split("?")[0] || "/";
  const query = new URLSearchParams(location.hash.includes("?") ? location.hash.slice(location.hash.indexOf("?") + 1) : "");
  return { path: hash, query };
}

/** True while the user edits a form on the page: polling must not overwrite what they type. */
function editing() {
  const main = document.getElementById("page");
  if (main.querySelector("form.editing")) return true;
  const active = document.activeElement;
  return !!(active && main.contains(active) && active.closest("form") && active.matches("input, textarea, select"));
}

function setStatus(text) {
  document.getElementById("status").textContent = text;
}

function showPageError(err) {
  const box = document.getElementById("errors");
  if (!err) {
    box.replaceChildren();
    return;
  }
  const node = errorBox(err);
  if (box.firstElementChild && box.firstElementChild.outerHTML === node.outerHTML) return;
  box.replaceChildren(node);
}

async function refreshCluster() {
  try {
    state.cluster = await get("/cluster");
  } catch {
    // The page's own refresh reports the API being down; the nav keeps its last state.
    return;
  }
  const security = !!state.cluster?.security?.enabled;
  for (const link of document.querySelectorAll("nav [data-security]")) link.hidden = !security;
}

/** One poll of the current page; never two at once, and stale results of a left page dropped. */
async function tick() {
  if (!state.page) return;
  if (state.running) {
    // A form asked for fresh data while a poll was in flight: poll again right after it.
    state.again = true;
    return;
  }
  if (document.hidden) return;
  if (editing()) {
    setStatus("Paused while you edit");
    return;
  }
  state.running = true;
  const generation = state.generation;
  try {
    if (state.page.refresh) await state.page.refresh(state.ctx);
    if (generation !== state.generation) return;
    showPageError(null);
    setStatus(`Updated ${new Date().toLocaleTimeString("en-GB")}`);
  } catch (err) {
    if (generation !== state.generation) return;
    showPageError(err);
    setStatus(err.retriable ? "Retrying…" : "Update failed");
  } finally {
    state.running = false;
    if (state.again) {
      state.again = false;
      tick();
    }
  }
}

async function show() {
  const { path, query } = parseHash();
  const match = routes.map(([re, page, nav]) => ({ m: path.match(re), page, nav })).find((r) => r.m);
  state.generation += 1;
  showPageError(null);
  const root = document.getElementById("page");
  for (const link of document.querySelectorAll("nav a")) {
    if (match && link.dataset.page === match.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!match) {
    state.page = null;
    root.replaceChildren(h("h1", {}, "Not found"), h("p", {}, "No console page at ", h("code", {}, path), "."));
    return;
  }
  let params;
  try {
    params = Object.fromEntries(Object.entries(match.m.groups ?? {}).map(([k, v]) => [k, decodeURIComponent(v)]));
  } catch {
    // A malformed %-sequence (hand-typed): no page names it.
    state.page = null;
    root.replaceChildren(h("h1", {}, "Not found"), h("p", {}, "Bad encoding in ", h("code", {}, path), "."));
    return;
  }
  state.page = match.page;
  state.ctx = {
    root,
    params,
    query,
    get cluster() {
      return state.cluster;
    },
    /** Re-runs the page's refresh now (after a form changed something). */
    refresh: () => tick(),
  };
  document.title = `${typeof match.page.title === "function" ? match.page.title(state.ctx) : match.page.title} · Skiff console`;
  root.replaceChildren();
  match.page.mount(state.ctx);
  await refreshCluster();
  await tick();
}

function start() {
  window.addEventListener("hashchange", show);
  show();
  state.timer = setInterval(() => {
    tick();
  }, POLL_MS);
  setInterval(refreshCluster, POLL_MS * 5);
}

start();

// DOM helpers shared by the pages: an element builder, flicker-free region updates, tables,
// forms with their own error line, and number formatting.

/**
 * h("a", { href: "#/x", class: "btn" }, "text", child...): attributes are set as attributes
 * (so a region's outerHTML compares meaningfully); `on*` functions become listeners.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/**
 * Puts `node` in `region` only when it differs from what is shown: a poll that brings the same
 * data touches nothing (no flicker, selection and scroll kept).
 */
export function update(region, node) {
  const current = region.firstElementChild;
  if (current && region.childNodes.length === 1 && current.outerHTML === node.outerHTML) return;
  region.replaceChildren(node);
}

/**
 * A table. columns: [{ label, value(row) -> node|string, num: bool }]; rows keyed for tests by
 * data-key (the first column's text unless key(row) is given).
 */
export function table({ caption, columns, rows, empty = "None.", key, label }) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h(
    "table",
    { "aria-label": label ?? caption },
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h(
          "tr",
          { "data-key": key ? key(row) : null },
          columns.map((c) => h("td", { class: c.num ? "num" : null, "data-col": c.id ?? null }, c.value(row))),
        ),
      ),
    ),
  );
}

/** A labelled control: <label>Text <input …></label>. */
export function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", { class: "label" }, label), control, hint ? h("small", {}, hint) : null);
}

/** A card with a heading. */
export function card(title, ...children) {
  return h("section", { class: "card", "aria-label": title }, h("h2", {}, title), ...children);
}

/** Key/value facts as a definition list. */
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.filter(Boolean).map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v ?? "—"))),
  );
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind ?? ""}` }, text);
}

/** The error line of a form or region: API code + message. */
export function errorBox(err) {
  const code = err && err.code ? h("strong", {}, err.code) : null;
  return h("div", { class: "error", role: "alert" }, code, code ? ": " : null, err?.message ?? String(err));
}

/**
 * Wires a form: collects nothing itself; `submit` gets the form and returns a node (or
 * nothing) to show as the result. While it runs the submit button is disabled; an ApiError is
 * shown in the form's own error line. The `editing` class (set on input) pauses page polling.
 */
export function onSubmit(form, submit, after, out) {
  // `out` may live outside the form when the form itself is rebuilt by polls.
  if (!out) {
    out = h("div", { class: "form-result", "aria-live": "polite" });
    form.append(out);
  }
  form.addEventListener("input", () => form.classList.add("editing"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    out.replaceChildren();
    try {
      const result = await submit(form);
      form.classList.remove("editing");
      if (result) out.replaceChildren(result);
      if (after) await after();
    } catch (err) {
      out.replaceChildren(errorBox(err));
    } finally {
      if (button) button.disabled = false;
    }
  });
  form.addEventListener("reset", () => {
    form.classList.remove("editing");
    out.replaceChildren();
  });
  form.result = out;
  return form;
}

const nf = new Intl.NumberFormat("en-US");

export function fmtNumber(n) {
  return n === null || n === undefined ? "—" : nf.format(n);
}

const nf1 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

/** A count that may be fractional (requests attributed to topics by their share of an object). */
export function fmtCount(n) {
  return n === null || n === undefined ? "—" : nf1.format(n);
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function fmtRate(n, unit = "/s") {
  if (n === null || n === undefined) return "—";
  return `${n < 10 ? n.toFixed(2) : nf.format(Math.round(n))}${unit}`;
}

export function fmtMoney(n) {
  if (n === null || n === undefined) return "—";
  if (n === 0) return "$0";
  if (n < 0.0001) return "< $0.0001";
  if (n < 0.01) return `$${n.toPrecision(2)}`;
  return `$${n.toFixed(2)}`;
}

export function fmtTime(ms) {
  if (ms === null || ms === undefined || ms < 0) return "—";
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").replace("Z", " UTC");
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 0) return "unlimited";
  const units = [
    [86400000, "d"],
    [3600000, "h"],
    [60000, "min"],
    [1000, "s"],
  ];
  for (const [size, unit] of units) {
    if (ms >= size && ms % size === 0) return `${ms / size} ${unit}`;
  }
  return `${nf.format(ms)} ms`;
}

export function fmtAgo(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  return s < 1 ? "just now" : `${s} s ago`;
}

// Building blocks shared by the views: cards, panels, placeholders, sortable tables, and how a
// transaction reads in one line.

import {
  accountLink,
  blockLink,
  compact,
  fillTimes,
  html,
  int,
  isAddress,
  subnetLink,
  tokens,
  tokensExact,
} from "./format.js";

export function card(label, value, sub, { id, testid, progress, accent } = {}) {
  return html`<div class="card${accent ? " card-accent" : ""}">
    <div class="card-label">${label}</div>
    <div class="card-value"${id ? html` id="${id}"` : ""}${
      testid ? html` data-testid="${testid}"` : ""
    }>${value}</div>
    ${
      progress !== undefined
        ? html`<div class="meter"><span style="width:${Math.min(100, Math.max(0, progress * 100)).toFixed(2)}%"></span></div>`
        : ""
    }
    ${sub ? html`<div class="card-sub">${sub}</div>` : ""}
  </div>`;
}

export function panel(title, body, { id, subtitle, actions, wide, className } = {}) {
  return html`<section class="panel${wide ? " wide" : ""}${className ? ` ${className}` : ""}"${
    id ? html` id="${id}"` : ""
  }>
    <header class="panel-head">
      <div><h2>${title}</h2>${subtitle ? html`<div class="panel-sub">${subtitle}</div>` : ""}</div>
      ${actions ? html`<div class="panel-actions">${actions}</div>` : ""}
    </header>
    <div class="panel-body">${body}</div>
  </section>`;
}

// A section whose data source does not exist yet (gateway, marketplace, validator reports).
export function placeholder(icon, title, message, hint) {
  return html`<div class="placeholder">
    <div class="placeholder-icon" aria-hidden="true">${icon}</div>
    <div class="placeholder-title">${title}</div>
    <div class="placeholder-text">${message}</div>
    ${hint ? html`<div class="placeholder-hint">${hint}</div>` : ""}
  </div>`;
}

export function empty(message) {
  return html`<div class="empty">${message}</div>`;
}

export function amount(units, options) {
  return html`<span class="num" title="${tokensExact(units)} tokens">${tokens(units, options)}</span>`;
}

export function kindChip(kind) {
  return html`<span class="chip kind-${kind}">${kind.replace(/_/g, " ")}</span>`;
}

export function bar(fraction, text) {
  const width = Math.min(100, Math.max(0, Number(fraction) * 100));
  return html`<span class="cell-bar"><span class="num">${text}</span><span class="track"><span style="width:${width.toFixed(1)}%"></span></span></span>`;
}

// Replaces the element's content; `content` is an html`` result (or an array of them). The
// same markup again changes nothing, so a refresh that finds nothing new leaves the DOM (and
// the reader's hover, selection and focus) alone.
export function setHtml(element, content) {
  if (!element) return;
  const markup = String(html`${content}`);
  if (element._markup === markup && element.innerHTML !== "") return;
  element._markup = markup;
  element.innerHTML = markup;
  fillTimes(element);
}

// What a transaction does, in one line with links.
export function txSummary(tx) {
  const b = tx.body || {};
  switch (tx.kind) {
    case "transfer":
      return html`${amount(b.amount, { trim: true })} → ${accountLink(b.to)}`;
    case "create_subnet":
      return html`creates a subnet`;
    case "set_hyperparams":
      return html`${subnetLink(b.netuid)}: ${Object.entries(b.changes || {})
        .map(([k, v]) => `${k}=${v}`)
        .join(", ")}`;
    case "register":
      return html`${accountLink(b.hotkey)} on ${subnetLink(b.netuid)}`;
    case "serve":
      return html`${subnetLink(b.netuid)} at <span class="mono">${b.protocol}://${b.ip}:${b.port}</span>`;
    case "add_stake":
      return html`${amount(b.amount, { trim: true })} on ${accountLink(b.hotkey)}`;
    case "remove_stake":
      return html`${amount(b.amount, { trim: true })} from ${accountLink(b.hotkey)}`;
    case "set_weights":
    case "reveal_weights":
      return html`${subnetLink(b.netuid)}: ${int((b.uids || []).length)} uids`;
    case "dispute_open":
      return html`accuses ${accountLink((b.receipt || {}).miner)} on ${subnetLink(b.netuid)} of a wrong answer`;
    case "dispute_vote":
      return html`<a class="mono" href="#/dispute/${b.dispute_id}">dispute #${b.dispute_id}</a>: ${
        b.guilty ? html`<span class="chip chip-bad">guilty</span>` : html`<span class="chip chip-v">not guilty</span>`
      }`;
    case "commit_weights":
      return html`${subnetLink(b.netuid)}: commit <span class="mono">${String(b.commit_hash).slice(0, 10)}…</span>`;
    default:
      return genericSummary(b);
  }
}

const AMOUNT_FIELDS = /(^|_)(amount|stake|deposit|price|max_price|cumulative)$/;

// Kinds this page has no words for yet (the market's, channels ...): their fields, with
// addresses as links and amounts as tokens.
function genericSummary(body) {
  const entries = Object.entries(body).filter(([, v]) => v !== "" && v !== null);
  if (!entries.length) return html`<span class="muted">–</span>`;
  return html`<span class="fields">${entries.slice(0, 6).map(([k, v], i) => {
    let value;
    if (typeof v === "string" && isAddress(v)) value = accountLink(v);
    else if (AMOUNT_FIELDS.test(k) && (typeof v === "number" || typeof v === "bigint"))
      value = amount(v, { trim: true });
    else if (typeof v === "object") value = html`<span class="muted">…</span>`;
    else value = html`<span class="mono">${String(v).slice(0, 24)}</span>`;
    return html`${i ? " · " : ""}<span class="muted">${k.replace(/_/g, " ")}</span> ${value}`;
  })}</span>`;
}

export function txRow(tx, { showBlock = true } = {}) {
  return html`<tr>
    ${showBlock ? html`<td>${blockLink(tx.height)}</td>` : ""}
    <td>${kindChip(tx.kind)}</td>
    <td>${accountLink(tx.sender)}</td>
    <td class="summary">${txSummary(tx)}</td>
  </tr>`;
}

// A table whose columns sort on click, and whose sort survives re-renders (live updates).
// columns: [{key, label, value(row) -> sortable, cell(row) -> html, numeric, title}]
export class SortableTable {
  constructor(container, columns, { sortKey, descending = true, rowAttrs, id } = {}) {
    this.container = container;
    this.columns = columns;
    this.sortKey = sortKey || columns[0].key;
    this.descending = descending;
    this.rowAttrs = rowAttrs || (() => "");
    this.id = id;
    this.rows = [];
    this.filter = "";
    container.addEventListener("click", (event) => {
      const th = event.target.closest("th[data-key]");
      if (!th) return;
      const key = th.dataset.key;
      if (key === this.sortKey) this.descending = !this.descending;
      else {
        this.sortKey = key;
        this.descending = th.dataset.numeric === "1";
      }
      this.render();
    });
  }

  update(rows) {
    this.rows = rows;
    this.render();
  }

  sorted() {
    const column = this.columns.find((c) => c.key === this.sortKey) || this.columns[0];
    const sign = this.descending ? -1 : 1;
    return [...this.rows].sort((a, b) => {
      const x = column.value(a);
      const y = column.value(b);
      if (x === y) return 0;
      return (x < y ? -1 : 1) * sign;
    });
  }

  render() {
    const head = this.columns.map((c) => {
      const active = c.key === this.sortKey;
      const arrow = active ? (this.descending ? "▾" : "▴") : "";
      return html`<th data-key="${c.key}" data-numeric="${c.numeric ? 1 : 0}" class="${
        c.numeric ? "n" : ""
      }${active ? " sorted" : ""}" title="${c.title || `sort by ${c.label}`}" aria-sort="${
        active ? (this.descending ? "descending" : "ascending") : "none"
      }">${c.label}<span class="arrow">${arrow}</span></th>`;
    });
    const body = this.sorted().map(
      (row) =>
        html`<tr${this.rowAttrs(row)}>${this.columns.map(
          (c) => html`<td class="${c.numeric ? "n" : ""}">${c.cell(row)}</td>`,
        )}</tr>`,
    );
    const scroll = this.container.querySelector(".table-scroll");
    const left = scroll ? scroll.scrollLeft : 0;
    setHtml(
      this.container,
      html`<div class="table-scroll"><table class="data sortable"${
        this.id ? html` id="${this.id}"` : ""
      }><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div>`,
    );
    const fresh = this.container.querySelector(".table-scroll");
    if (fresh) fresh.scrollLeft = left;
  }
}

export function keyValues(pairs) {
  return html`<dl class="kv">${pairs.map(
    ([k, v]) => html`<div><dt>${k}</dt><dd>${v}</dd></div>`,
  )}</dl>`;
}

export function compactTokens(units) {
  return compact(Number(units) / 1e9);
}

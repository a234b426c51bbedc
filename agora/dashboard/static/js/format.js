// Formatting and safe HTML: every number the page shows goes through here.
//
// Amounts are integers in units (10^9 per token). The API's JSON may carry integers above 2^53
// (the supply cap is 2.1e16 units); api.js parses those as BigInt, so everything here accepts a
// Number or a BigInt and does its arithmetic on BigInt.

export const UNITS_PER_TOKEN = 1_000_000_000n;

// -- safe HTML --------------------------------------------------------------------------------

class Raw {
  constructor(text) {
    this.text = text;
  }
  toString() {
    return this.text;
  }
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

function render(value) {
  if (value === null || value === undefined || value === false) return "";
  if (value instanceof Raw) return value.text;
  if (Array.isArray(value)) return value.map(render).join("");
  return escapeHtml(value);
}

// html`<td>${name}</td>`: interpolations are escaped unless they are html`` results themselves.
export function html(strings, ...values) {
  let out = strings[0];
  for (let i = 0; i < values.length; i += 1) out += render(values[i]) + strings[i + 1];
  return new Raw(out);
}

export const raw = (text) => new Raw(text);

// -- numbers ----------------------------------------------------------------------------------

export function big(value) {
  if (typeof value === "bigint") return value;
  if (value === null || value === undefined) return 0n;
  return BigInt(Math.round(Number(value)));
}

const groups = new Intl.NumberFormat("en-US");

export function int(value) {
  if (value === null || value === undefined) return "–";
  return groups.format(typeof value === "bigint" ? value : Math.round(Number(value)));
}

// Units as tokens with `decimals` decimals, rounded half up, with thousands separators:
// tokens(1234567890123n) -> "1,234.5679". `trim` drops trailing zeros (and a bare point).
export function tokens(units, { decimals = 4, trim = false } = {}) {
  let value = big(units);
  const negative = value < 0n;
  if (negative) value = -value;
  const scale = 10n ** BigInt(9 - decimals);
  value = (value + scale / 2n) / scale; // rounded to `decimals`
  const base = 10n ** BigInt(decimals);
  const whole = value / base;
  let frac = decimals > 0 ? (value % base).toString().padStart(decimals, "0") : "";
  if (trim) frac = frac.replace(/0+$/, "");
  const text = groups.format(whole) + (frac ? `.${frac}` : "");
  return (negative ? "-" : "") + text;
}

// The exact amount with all 9 decimals (trailing zeros dropped), for tooltips.
export function tokensExact(units) {
  return tokens(units, { decimals: 9, trim: true });
}

// A fixed-point figure (`value` over `one`) as a decimal: 0.6900.
export function fixed(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "–";
  return Number(value).toFixed(digits);
}

export function percent(fraction, digits = 2) {
  return `${(Number(fraction) * 100).toFixed(digits)}%`;
}

// 1234 -> "1.2k", 9439985 -> "9.4M": for axes and rough estimates.
export function compact(value) {
  return new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 }).format(
    Number(value),
  );
}

export function duration(seconds) {
  const s = Math.max(0, Math.round(Number(seconds)));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  const days = Math.floor(s / 86400);
  if (days < 365) return `${days} d ${Math.floor((s % 86400) / 3600)} h`;
  return `${(days / 365.25).toFixed(1)} years`;
}

export function ago(timestampMs, nowMs = Date.now()) {
  const seconds = (nowMs - Number(timestampMs)) / 1000;
  if (seconds < 1.5) return "just now";
  return `${duration(seconds)} ago`;
}

// "3 s ago" that stays true: the text is filled in (and kept current) by fillTimes, so the
// markup itself does not change from second to second.
export function agoSpan(timestampMs) {
  return html`<span data-ts="${String(timestampMs)}"></span>`;
}

export function fillTimes(root, nowMs = Date.now()) {
  for (const element of root.querySelectorAll("[data-ts]")) {
    element.textContent = ago(element.dataset.ts, nowMs);
  }
}

export function dateTime(timestampMs) {
  const date = new Date(Number(timestampMs));
  return date.toLocaleString("en-GB", { hour12: false });
}

export function shortHash(hash, head = 6, tail = 4) {
  if (!hash) return "–";
  return hash.length <= head + tail + 1 ? hash : `${hash.slice(0, head)}…${hash.slice(-tail)}`;
}

// -- names and links --------------------------------------------------------------------------

const names = { labels: {}, enabled: false };

// Dev-network names (alice, alice/hot ...) come from the dashboard's config; they are shown only
// on the dev chain, where anyone can derive those keys.
export function setLabels(labels, enabled) {
  names.labels = labels || {};
  names.enabled = Boolean(enabled);
}

export function labelOf(address) {
  return names.enabled ? names.labels[address] : undefined;
}

// Two colours from the address: a small swatch that tells keys apart at a glance.
export function swatch(address) {
  const a = `#${address.slice(0, 6)}`;
  const b = `#${address.slice(-6)}`;
  return html`<span class="swatch" style="--a:${a};--b:${b}" aria-hidden="true"></span>`;
}

export function accountLink(address, { full = false } = {}) {
  if (!address) return html`<span class="muted">–</span>`;
  const label = labelOf(address);
  const text = full ? address : shortHash(address, 8, 6);
  return html`<a class="addr" href="#/account/${address}" title="${address}">${swatch(address)}${
    label ? html`<span class="label">${label}</span>` : ""
  }<span class="mono">${label && !full ? shortHash(address, 4, 4) : text}</span></a>`;
}

export function blockLink(height, text) {
  return html`<a class="mono" href="#/block/${height}">${text ?? `#${int(height)}`}</a>`;
}

export function subnetLink(netuid, text) {
  return html`<a href="#/subnet/${netuid}">${text ?? `SN${netuid}`}</a>`;
}

export function isAddress(text) {
  return /^[0-9a-f]{64}$/.test(text);
}

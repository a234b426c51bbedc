// The work miners do and how it is judged: validators' measurements, the gateway's receipts,
// and disputes on the ledger. Shared by the subnet page, the miner (account) page, and the
// receipt and dispute pages.
//
// Sources, all public:
//   /validators/{netuid}            what each validator measured (the dashboard reads the public
//                                   APIs validators announce in the metagraph)
//   gateway /v1/gateway/receipts    receipts of answers the gateway served (no content)
//   node /v1/disputes               disputes opened against miners
// Receipts and disputes come from newer gateways and nodes: without the route a section says
// "not available" and why, and asks again a minute later.

import { getJson, isMissingRoute } from "../api.js";
import {
  accountLink,
  agoSpan,
  blockLink,
  dateTime,
  fixed,
  html,
  int,
  isAddress,
  shortHash,
  subnetLink,
} from "../format.js";
import { amount, bar, empty, keyValues, placeholder } from "../ui.js";

const RECHECK_MS = 60_000;
const absent = new Map(); // feature -> when a 404 said the route is missing

function missing(feature) {
  const since = absent.get(feature);
  return since !== undefined && Date.now() - since < RECHECK_MS;
}


function ms(value) {
  return value === null || value === undefined ? html`<span class="muted">–</span>` : html`${Number(value).toFixed(1)} ms`;
}

function perSecond(value) {
  return value === null || value === undefined ? html`<span class="muted">–</span>` : html`${Number(value).toFixed(0)} tok/s`;
}

// -- validators' measurements -------------------------------------------------------------------

export async function readValidators(netuid) {
  try {
    const data = await getJson(`validators/${netuid}`);
    return { ok: true, validators: data.validators || [] };
  } catch (error) {
    return { ok: false, error };
  }
}

function verdictChip(row) {
  const verdict = row.last_verdict || "–";
  const cls = verdict === "ok" ? "chip chip-v" : verdict === "–" ? "chip" : "chip chip-bad";
  return html`<span class="${cls}" title="${row.last_reason || ""}">${verdict}</span>`;
}

// One row per (validator, miner); `hotkey` keeps only that miner's rows.
export function measurementsTable(validators, { hotkey = null, netuid = null } = {}) {
  const rows = [];
  for (const v of validators) {
    if (v.error) continue;
    for (const s of v.scores || []) {
      if (hotkey === null || s.hotkey === hotkey) rows.push({ v, s });
    }
  }
  if (!rows.length) return null;
  const many = new Set(rows.map((r) => r.v.hotkey)).size > 1 || hotkey !== null;
  return html`<div class="table-scroll"><table class="data" id="${hotkey ? "miner-measurements" : "validator-measurements"}">
    <thead><tr>${many ? html`<th>Validator</th>` : ""}${hotkey ? "" : html`<th class="n">UID</th><th>Miner</th>`}
    <th class="n">Score</th><th class="n" title="median latency of the last probes">p50</th>
    <th class="n" title="95th percentile latency of the last probes">p95</th>
    <th class="n" title="tokens per second, median of the last probes">Throughput</th>
    <th class="n" title="probes answered correctly / probes since it first saw this hotkey">OK / probes</th>
    <th class="n" title="wrong answers it signed a receipt for: proven misbehaviour">Proven</th>
    <th>Last verdict</th><th class="n">Last probe</th></tr></thead>
    <tbody>${rows.map(
      ({ v, s }) => html`<tr data-uid="${s.uid}" data-hotkey="${s.hotkey}">
        ${many ? html`<td>${accountLink(v.hotkey)}</td>` : ""}
        ${hotkey ? "" : html`<td class="n"><a href="#/subnet/${netuid ?? v.netuid}?uid=${s.uid}"><b>${s.uid}</b></a></td><td>${accountLink(s.hotkey)}</td>`}
        <td class="n">${bar(Number(s.score), fixed(Number(s.score)))}</td>
        <td class="n">${ms(s.latency_p50_ms)}</td><td class="n">${ms(s.latency_p95_ms)}</td>
        <td class="n">${perSecond(s.throughput_p50 ?? s.throughput)}</td>
        <td class="n">${int(s.ok)} / ${int(s.probes)}${s.failures ? html` <span class="muted small">${int(s.failures)} failed</span>` : ""}</td>
        <td class="n">${s.proven ? html`<span class="chip chip-bad">${int(s.proven)}</span>` : "0"}</td>
        <td>${verdictChip(s)}</td>
        <td class="n">${s.last_probe_ms ? agoSpan(s.last_probe_ms) : "–"}</td>
      </tr>`,
    )}</tbody></table></div>
    <div class="muted small">${validators.filter((v) => !v.error).map(
      (v, i) => html`${i ? " · " : ""}${accountLink(v.hotkey)} round ${int(v.round || 0)}, reference ${v.model || "?"}`,
    )}${validators.filter((v) => v.error).map(
      (v) => html` · <span class="chip chip-bad" title="${v.url}">${shortHash(v.hotkey, 4, 4)} ${v.error}</span>`,
    )}</div>`;
}

export function noMeasurements(result) {
  if (!result.ok) {
    return placeholder("◔", "Validators' reports are not available", result.error.message, "The page keeps retrying.");
  }
  const unreachable = result.validators.filter((v) => v.error);
  return placeholder(
    "◔",
    unreachable.length ? "The validators' APIs do not answer" : "No validator reports yet",
    unreachable.length
      ? unreachable.map((v) => html`${accountLink(v.hotkey)} at <span class="mono">${v.url}</span>: ${v.error}. `)
      : "Latency, throughput and scores show here once a validator that announces its public API (agora validator start --http-port PORT) has probed this subnet.",
    "",
  );
}

// -- receipts (the gateway's archive) -------------------------------------------------------------

export async function readReceipts(ctx, { miner = null, netuid = null, limit = 20 } = {}) {
  const api = ctx.gatewayApi;
  if (!api) return { available: false, why: "no gateway connected: start the dashboard with --gateway URL" };
  if (missing("receipts")) return { available: false, why: "this gateway keeps no receipt archive (GET /v1/gateway/receipts)" };
  const query = new URLSearchParams({ limit: String(limit) });
  if (miner) query.set("miner", miner);
  if (netuid !== null && netuid !== undefined) query.set("netuid", String(netuid));
  try {
    const data = await api.get(`gateway/receipts?${query}`);
    absent.delete("receipts");
    return { available: true, receipts: data.receipts || [] };
  } catch (error) {
    if (isMissingRoute(error)) {
      absent.set("receipts", Date.now());
      return { available: false, why: "this gateway keeps no receipt archive (GET /v1/gateway/receipts)" };
    }
    return { available: false, why: `the gateway does not answer: ${error.message}` };
  }
}

export function receiptLink(hash) {
  return html`<a class="mono" href="#/receipt/${hash}" title="${hash}">${shortHash(hash, 8, 4)}</a>`;
}

function receiptTime(r) {
  const t = Number(r.timestamp);
  return t > 1e12 ? t : t * 1000; // milliseconds (seconds from older miners)
}

export function receiptsTable(result, { showMiner = true } = {}) {
  if (!result.available) return placeholder("≡", "Receipts not available", result.why, "");
  if (!result.receipts.length) return empty("No receipts yet: answers the gateway serves show here with the miner's signed receipt.");
  return html`<div class="table-scroll"><table class="data" id="receipts-table">
    <thead><tr><th>Receipt</th><th>When</th>${showMiner ? html`<th>Miner</th>` : ""}<th>Subnet</th><th>Model</th>
    <th class="n">Tokens</th><th class="n">Price</th><th>Caller</th></tr></thead>
    <tbody>${result.receipts.map(({ hash, receipt: r, stream }) => html`<tr data-receipt="${hash}">
      <td>${receiptLink(hash)}${stream ? html` <span class="chip" title="streamed">stream</span>` : ""}</td>
      <td title="${dateTime(receiptTime(r))}">${agoSpan(receiptTime(r))}</td>
      ${showMiner ? html`<td>${accountLink(r.miner)}</td>` : ""}
      <td>${subnetLink(r.netuid)}</td><td class="mono small">${shortHash(r.model_id, 14, 6)}</td>
      <td class="n">${int(Number(r.prompt_tokens || 0) + Number(r.completion_tokens || 0))}</td>
      <td class="n">${amount(r.price, { decimals: 6, trim: true })}</td>
      <td>${accountLink(r.caller)}</td></tr>`)}</tbody></table></div>`;
}

// -- disputes (the ledger) ----------------------------------------------------------------------

export async function readDisputes(ctx, { miner = null, netuid = null, limit = 20 } = {}) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (miner) query.set("miner", miner);
  if (netuid !== null && netuid !== undefined) query.set("netuid", String(netuid));
  if (missing("disputes")) return { available: false, why: "this node has no dispute routes yet (GET /v1/disputes)" };
  try {
    const data = await ctx.api.get(`disputes?${query}`);
    absent.delete("disputes");
    return { available: true, disputes: data.disputes || [] };
  } catch (error) {
    if (isMissingRoute(error)) {
      absent.set("disputes", Date.now());
      return { available: false, why: "this node has no dispute routes yet (GET /v1/disputes)" };
    }
    return { available: false, why: `the node does not answer: ${error.message}` };
  }
}

export function disputeLink(id) {
  return html`<a class="mono" href="#/dispute/${id}">${/^[0-9a-f]{64}$/.test(String(id)) ? shortHash(String(id), 8, 4) : `#${id}`}</a>`;
}

export function statusChip(status) {
  const s = String(status || "?");
  const cls = /open|pending/.test(s) ? "chip chip-warn" : /slash|upheld|proven|guilty/.test(s) ? "chip chip-bad" : "chip chip-v";
  return html`<span class="${cls}">${s}</span>`;
}

const first = (d, ...keys) => keys.map((k) => d[k]).find((v) => v !== undefined && v !== null);

export function disputesTable(result, { showMiner = true } = {}) {
  if (!result.available) return placeholder("§", "Disputes not available", result.why, "");
  if (!result.disputes.length) return empty("No disputes: nobody has proven a wrong answer against these miners.");
  return html`<div class="table-scroll"><table class="data" id="disputes-table">
    <thead><tr><th>Dispute</th><th>Status</th>${showMiner ? html`<th>Miner</th>` : ""}<th>Subnet</th>
    <th>Opened by</th><th>Opened</th><th>Receipt</th><th class="n">Slashed</th></tr></thead>
    <tbody>${result.disputes.map((d) => {
      const receipt = first(d, "receipt_hash", "receipt");
      const opened = first(d, "opened_at", "opened_height", "height", "created_at");
      const slashed = first(d, "slashed", "slash", "slashed_amount");
      return html`<tr data-dispute="${d.id}">
        <td>${disputeLink(d.id)}</td><td>${statusChip(d.status)}</td>
        ${showMiner ? html`<td>${accountLink(d.miner)}</td>` : ""}
        <td>${d.netuid !== undefined ? subnetLink(d.netuid) : "–"}</td>
        <td>${accountLink(first(d, "challenger", "validator", "opener", "sender"))}</td>
        <td>${opened !== undefined ? blockLink(opened) : "–"}</td>
        <td>${typeof receipt === "string" ? receiptLink(receipt) : "–"}</td>
        <td class="n">${slashed !== undefined ? amount(slashed) : "–"}</td></tr>`;
    })}</tbody></table></div>`;
}

// -- generic fields: addresses, blocks, receipts and amounts as links --------------------------

const BLOCK_KEY = /(^|_)(block|height|at|until|expires|deadline)$/;
const AMOUNT_KEY = /(amount|stake|slash|slashed|bond|deposit|price|reward|fee|burn|balance)$/;
const RECEIPT_KEY = /receipt/;

export function fieldValue(key, value) {
  if (value === null || value === undefined) return html`<span class="muted">–</span>`;
  if (typeof value === "string" && /^[0-9a-f]{64}$/.test(value)) {
    if (RECEIPT_KEY.test(key)) return receiptLink(value);
    if (/(^|_)hash$/.test(key)) return html`<span class="mono">${value}</span>`;
    if (isAddress(value)) return accountLink(value, { full: true });
  }
  if ((typeof value === "number" || typeof value === "bigint") && Number.isInteger(Number(value))) {
    if (key === "netuid") return subnetLink(value);
    if (BLOCK_KEY.test(key)) return Number(value) < 0 ? html`<span class="muted">–</span>` : blockLink(value);
    if (AMOUNT_KEY.test(key)) return html`${amount(value, { decimals: 9, trim: true })} tokens`;
    if (/_ms$/.test(key) || key === "timestamp") {
      const t = Number(value) > 1e12 ? Number(value) : Number(value) * 1000;
      return html`${dateTime(t)} <span class="muted small">(${agoSpan(t)})</span>`;
    }
  }
  if (Array.isArray(value) || (typeof value === "object" && value !== null)) {
    return fields(value);
  }
  return html`<span class="mono">${String(value)}</span>`;
}

export function fields(object, { skip = [] } = {}) {
  const entries = (Array.isArray(object) ? object.map((v, i) => [String(i), v]) : Object.entries(object)).filter(
    ([k]) => !skip.includes(k),
  );
  if (!entries.length) return html`<span class="muted">–</span>`;
  return keyValues(entries.map(([k, v]) => [k.replace(/_/g, " "), fieldValue(k, v)]));
}

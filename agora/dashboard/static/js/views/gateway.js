// The gateway, read through the dashboard's /gateway/v1/... proxy (only when the dashboard was
// started with --gateway): what it serves (GET /v1/gateway) and the miners it routes to with
// what it measured (GET /v1/gateway/miners: latency, requests served and failed).
//
// Requests per second are derived here from the gateway's running counters between two reads:
// its public aggregate figures (GET /v1/gateway/stats: answers by status, errors by code, spend
// per key today by key id), or, from a gateway without them, the miners' served + failed.
// What a key did call by call stays private to the key (GET /v1/usage needs the key).

import { stackedArea } from "../charts.js";
import { accountLink, html, int, subnetLink } from "../format.js";
import { amount, bar, card, empty, panel, placeholder, setHtml } from "../ui.js";
import { readReceipts, receiptsTable } from "./work.js";

const MAX_SAMPLES = 180;
const traffic = []; // [{t: ms, total: requests so far}], oldest first

export async function readGateway(ctx) {
  const api = ctx.gatewayApi;
  if (!api) return { connected: false };
  try {
    const [info, miners, stats] = await Promise.all([
      api.get("gateway"),
      api.get("gateway/miners"),
      api.optional("gateway-stats", "gateway/stats"),
    ]);
    const all = Object.entries(miners || {}).flatMap(([netuid, list]) =>
      (list || []).map((m) => ({ ...m, netuid: Number(netuid) })),
    );
    const total = stats
      ? Number(stats.requests.total)
      : all.reduce((sum, m) => sum + Number(m.served || 0) + Number(m.failed || 0), 0);
    const now = Date.now();
    if (!traffic.length || now - traffic[traffic.length - 1].t > 500) {
      traffic.push({ t: now, total });
      if (traffic.length > MAX_SAMPLES) traffic.shift();
    }
    return { connected: true, reachable: true, info, miners: all, stats };
  } catch (error) {
    return { connected: true, reachable: false, error };
  }
}

// Requests per second between successive reads: [{t, rps}].
export function rates() {
  const out = [];
  for (let i = 1; i < traffic.length; i += 1) {
    const dt = (traffic[i].t - traffic[i - 1].t) / 1000;
    const dn = traffic[i].total - traffic[i - 1].total;
    if (dt > 0 && dn >= 0) out.push({ t: traffic[i].t, rps: dn / dt });
  }
  return out;
}

function latency(ms) {
  return ms === null || ms === undefined ? html`<span class="muted">–</span>` : html`${Number(ms).toFixed(1)} ms`;
}

function median(values) {
  const sorted = values.filter((v) => v !== null && v !== undefined).map(Number).sort((a, b) => a - b);
  if (!sorted.length) return null;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function noGateway() {
  return placeholder(
    "⇄",
    "No gateway connected",
    "Requests per second, miners' latency and what they served will show here.",
    html`Start the dashboard with <code>--gateway URL</code>.`,
  );
}

function unreachable(ctx, gateway) {
  return placeholder(
    "⇄",
    "The gateway does not answer",
    html`<span class="mono">${ctx.config.gateway.url}</span>: ${gateway.error.message}`,
    "The page keeps retrying.",
  );
}

export function gatewaySummary(ctx, gateway, { link = true } = {}) {
  if (!gateway.connected) return noGateway();
  if (!gateway.reachable) return unreachable(ctx, gateway);
  const miners = gateway.miners.filter((m) => m.health_error !== "status validator"); // not validators' APIs
  const healthy = miners.filter((m) => m.healthy).length;
  const recent = rates().slice(-5);
  const rps = recent.length ? recent.reduce((s, r) => s + r.rps, 0) / recent.length : null;
  const p50 = median(gateway.miners.map((m) => m.latency_ms));
  const stats = gateway.stats;
  const errors = stats ? Number(stats.requests.errors) : null;
  return html`<div class="cards compact">
      ${card("Requests / s", html`<span data-testid="gateway-rps">${rps === null ? "…" : rps.toFixed(2)}</span>`, stats ? `${int(stats.requests.total)} since the gateway started` : "over the last reads")}
      ${stats ? card("Errors", html`<span data-testid="gateway-errors">${int(errors)}</span>`, stats.requests.total ? `${((100 * errors) / Number(stats.requests.total)).toFixed(1)}% of answers` : "no requests yet") : ""}
      ${stats ? card("Spent today", amount(stats.spend_today.total, { decimals: 4 }), `by ${int(stats.spend_today.keys.length + stats.spend_today.more_keys)} key(s)`) : ""}
      ${card("Miners", html`${healthy} <span class="muted">/ ${miners.length}</span>`, "healthy")}
      ${card("Latency", p50 === null ? "–" : `${p50.toFixed(0)} ms`, "median of the miners")}
      ${card("Models", int((gateway.info.models || []).length), "served")}
    </div>
    ${link ? html`<div class="panel-foot"><a href="#/gateway" class="button">open the gateway</a></div>` : ""}`;
}

// The miners of one subnet as the gateway measures them (for the subnet page), or null.
export function minerPerformance(gateway, netuid) {
  if (!gateway.connected || !gateway.reachable) return null;
  const miners = gateway.miners.filter((m) => m.netuid === netuid);
  if (!miners.length) return null;
  return minersTable(miners, { showSubnet: false });
}

function minersTable(miners, { showSubnet = true } = {}) {
  return html`<div class="table-scroll"><table class="data" id="gateway-miners">
    <thead><tr>${showSubnet ? html`<th>Subnet</th>` : ""}<th class="n">UID</th><th>Hotkey</th><th>Health</th>
    <th class="n">Latency</th><th class="n">In flight</th><th class="n">Served</th><th class="n">Failed</th>
    <th class="n">Price / 1k tokens</th></tr></thead>
    <tbody>${miners.map(
      (m) => html`<tr>
        ${showSubnet ? html`<td>${subnetLink(m.netuid)}</td>` : ""}
        <td class="n"><b>${m.uid}</b></td><td>${accountLink(m.hotkey)}</td>
        <td>${m.healthy
          ? html`<span class="chip chip-v">healthy</span>`
          : m.health_error === "status validator"
            ? html`<span class="chip" title="this endpoint is a validator's public API, not a miner">validator</span>`
            : html`<span class="chip chip-bad" title="${m.health_error || ""}">down</span>`}</td>
        <td class="n">${latency(m.latency_ms)}</td><td class="n">${int(m.in_flight)}</td>
        <td class="n">${int(m.served)}</td><td class="n">${int(m.failed)}</td>
        <td class="n">${m.price_per_1k_tokens === null || m.price_per_1k_tokens === undefined ? "–" : amount(m.price_per_1k_tokens, { decimals: 6, trim: true })}</td>
      </tr>`,
    )}</tbody></table></div>`;
}

export class GatewayView {
  constructor(element, params, ctx) {
    this.ctx = ctx;
    this.element = element;
    setHtml(
      element,
      html`<div class="page-head"><div><h1>Gateway</h1>
        <div class="page-sub">people pay for AI through an OpenAI-compatible API; the gateway routes to miners</div></div></div>
        ${panel("Gateway", html`<div id="gateway-summary">${empty("Loading…")}</div>`, { id: "gateway-panel" })}
        <div class="grid two">
          ${panel("Requests per second", html`<div class="chart" id="rps-chart"><canvas></canvas></div><div id="rps-note"></div>`, { id: "gateway-rps", subtitle: "from the gateway's counters, while this page is open" })}
          ${panel("What it serves", html`<div id="gateway-models"></div>`, { id: "gateway-models-panel" })}
        </div>
        ${panel("Miners", html`<div id="gateway-miner-list"></div>`, { id: "gateway-miners-panel", subtitle: "as the gateway measures them" })}
        <div class="grid two">
          ${panel("Spend per API key", html`<div id="gateway-spend-body">${empty("Loading…")}</div>`, {
            id: "gateway-spend",
            subtitle: "today, by key id (the key's public name); call by call it is private to the key",
          })}
          ${panel("Errors", html`<div id="gateway-errors-body">${empty("Loading…")}</div>`, {
            id: "gateway-errors",
            subtitle: "answers the gateway refused or could not serve, by code, since it started",
          })}
        </div>
        ${panel("Recent receipts", html`<div id="gateway-receipts">${empty("Loading…")}</div>`, {
          id: "gateway-receipts-panel",
          subtitle: "every answer carries the miner's signed receipt; click one to check it",
        })}`,
    );
  }

  async refresh() {
    const gateway = await readGateway(this.ctx);
    setHtml(this.element.querySelector("#gateway-summary"), gatewaySummary(this.ctx, gateway, { link: false }));
    const canvas = this.element.querySelector("#rps-chart canvas");
    const series = rates();
    if (!gateway.reachable || series.length < 2) {
      canvas.hidden = true;
      setHtml(
        this.element.querySelector("#rps-note"),
        empty(gateway.reachable ? "Measuring… (two reads make a rate)" : "No data."),
      );
    } else {
      canvas.hidden = false;
      setHtml(this.element.querySelector("#rps-note"), "");
      stackedArea(
        canvas,
        series.map((r) => r.t),
        [{ name: "requests / s", color: "#34d399", values: series.map((r) => r.rps) }],
        {
          height: 180,
          yFormat: (v) => v.toFixed(v < 10 ? 1 : 0),
          xFormat: (t) => new Date(t).toLocaleTimeString("en-GB", { hour12: false }),
          title: (t) => new Date(t).toLocaleTimeString("en-GB", { hour12: false }),
        },
      );
    }
    setHtml(this.element.querySelector("#gateway-receipts"), receiptsTable(await readReceipts(this.ctx, { limit: 20 })));
    if (!gateway.reachable) {
      for (const id of ["#gateway-models", "#gateway-miner-list", "#gateway-spend-body", "#gateway-errors-body"]) {
        setHtml(this.element.querySelector(id), empty("No data."));
      }
      return;
    }
    this.renderStats(gateway.stats);
    const info = gateway.info;
    setHtml(
      this.element.querySelector("#gateway-models"),
      html`<div class="page-sub small">gateway ${accountLink(info.address)} · chain ${info.chain_id} · v${info.version}</div>
      ${(info.models || []).length
        ? html`<div class="table-scroll"><table class="data" id="gateway-model-table">
          <thead><tr><th>Model</th><th>Subnet</th><th>Task</th><th class="n">Context</th></tr></thead>
          <tbody>${info.models.map(
            (m) => html`<tr><td class="mono">${m.id}</td><td>${subnetLink(m.subnet)}</td><td>${m.task}</td>
              <td class="n">${m.context_length ? int(m.context_length) : "–"}</td></tr>`,
          )}</tbody></table></div>`
        : empty("No model configured.")}`,
    );
    setHtml(
      this.element.querySelector("#gateway-miner-list"),
      gateway.miners.length ? minersTable(gateway.miners) : empty("The gateway routes to no miner yet."),
    );
  }

  renderStats(stats) {
    const spend = this.element.querySelector("#gateway-spend-body");
    const errors = this.element.querySelector("#gateway-errors-body");
    if (!stats) {
      const why = "This gateway publishes no aggregate figures (GET /v1/gateway/stats).";
      setHtml(spend, placeholder("¤", "Not available", why, ""));
      setHtml(errors, placeholder("!", "Not available", why, ""));
      return;
    }
    const keys = stats.spend_today.keys;
    const top = keys.length ? Number(keys[0].spent) : 0;
    setHtml(
      spend,
      keys.length
        ? html`<div class="table-scroll"><table class="data" id="gateway-spend-table">
          <thead><tr><th>Key</th><th class="n">Spent today</th><th class="n">Share</th></tr></thead>
          <tbody>${keys.map(
            (k) => html`<tr><td class="mono">${k.key_id}</td><td class="n">${amount(k.spent, { decimals: 6, trim: true })}</td>
              <td class="n">${bar(top ? Number(k.spent) / top : 0, `${((100 * Number(k.spent)) / Math.max(1, Number(stats.spend_today.total))).toFixed(1)}%`)}</td></tr>`,
          )}</tbody></table></div>
          ${stats.spend_today.more_keys ? html`<div class="muted small">and ${int(stats.spend_today.more_keys)} more keys</div>` : ""}`
        : empty("No key has spent anything today."),
    );
    const codes = Object.entries(stats.errors || {});
    setHtml(
      errors,
      html`<div class="muted small">${Object.entries(stats.by_status).map(
        ([status, n], i) => html`${i ? " · " : ""}<span class="${Number(status) >= 400 ? "chip chip-bad" : "chip chip-v"}">${status}</span> ${int(n)}`,
      )}</div>
      ${codes.length
        ? html`<div class="table-scroll"><table class="data" id="gateway-error-table">
          <thead><tr><th>Code</th><th class="n">Answers</th></tr></thead>
          <tbody>${codes.map(([code, n]) => html`<tr><td class="mono">${code}</td><td class="n">${int(n)}</td></tr>`)}</tbody></table></div>`
        : empty("No errors since the gateway started.")}`,
    );
  }
}

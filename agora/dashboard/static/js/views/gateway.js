// The gateway, read through the dashboard's /gateway/v1/... proxy (only when the dashboard was
// started with --gateway): what it serves (GET /v1/gateway) and the miners it routes to with
// what it measured (GET /v1/gateway/miners: latency, requests served and failed).
//
// Requests per second are derived here from the gateway's running counters (served + failed)
// between two reads. Spend per API key is private to each key (GET /v1/usage needs the key), so
// the dashboard does not show it.

import { stackedArea } from "../charts.js";
import { accountLink, html, int, subnetLink } from "../format.js";
import { amount, card, empty, panel, placeholder, setHtml } from "../ui.js";

const MAX_SAMPLES = 180;
const traffic = []; // [{t: ms, total: requests so far}], oldest first

export async function readGateway(ctx) {
  const api = ctx.gatewayApi;
  if (!api) return { connected: false };
  try {
    const [info, miners] = await Promise.all([api.get("gateway"), api.get("gateway/miners")]);
    const all = Object.entries(miners || {}).flatMap(([netuid, list]) =>
      (list || []).map((m) => ({ ...m, netuid: Number(netuid) })),
    );
    const total = all.reduce((sum, m) => sum + Number(m.served || 0) + Number(m.failed || 0), 0);
    const now = Date.now();
    if (!traffic.length || now - traffic[traffic.length - 1].t > 500) {
      traffic.push({ t: now, total });
      if (traffic.length > MAX_SAMPLES) traffic.shift();
    }
    return { connected: true, reachable: true, info, miners: all };
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
  const healthy = gateway.miners.filter((m) => m.healthy).length;
  const recent = rates().slice(-5);
  const rps = recent.length ? recent.reduce((s, r) => s + r.rps, 0) / recent.length : null;
  const p50 = median(gateway.miners.map((m) => m.latency_ms));
  return html`<div class="cards compact">
      ${card("Requests / s", rps === null ? "…" : rps.toFixed(2), "over the last reads")}
      ${card("Miners", html`${healthy} <span class="muted">/ ${gateway.miners.length}</span>`, "healthy")}
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
        <td>${m.healthy ? html`<span class="chip chip-v">healthy</span>` : html`<span class="chip chip-bad" title="${m.health_error || ""}">down</span>`}</td>
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
        ${panel(
          "Spend per API key",
          placeholder("¤", "Private to each key", "What a key spent is shown to its holder (GET /v1/usage with the key), not to the public."),
          { id: "gateway-spend" },
        )}`,
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
    if (!gateway.reachable) {
      setHtml(this.element.querySelector("#gateway-models"), empty("No data."));
      setHtml(this.element.querySelector("#gateway-miner-list"), empty("No data."));
      return;
    }
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
}

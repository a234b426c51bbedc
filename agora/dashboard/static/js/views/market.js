// The compute marketplace: providers, orders and leases, read from the node's /v1/market/...
// routes. A node without them (older, or the market not enabled) gets a placeholder, so the
// page works against either.

import { accountLink, blockLink, html, int, tokens } from "../format.js";
import { amount, bar, card, empty, panel, placeholder, setHtml } from "../ui.js";

// {available: false} when the node has no market routes; else providers, open orders and
// open leases.
export async function readMarket(api) {
  const providers = await api.optional("market", "market/providers");
  if (providers === null) return { available: false };
  const [orders, leases] = await Promise.all([
    api.get("market/orders?status=open"),
    api.get("market/leases?status=open"),
  ]);
  // Bids of the open orders that have some (GET /v1/market/orders/{id}: cheapest first).
  const open = orders.orders || [];
  const detailed = await Promise.all(
    open.slice(0, 20).map((o) => ((o.bids || []).length ? api.get(`market/orders/${o.id}`).catch(() => o) : o)),
  );
  return {
    available: true,
    providers: providers.providers || [],
    orders: [...detailed, ...open.slice(20)],
    leases: leases.leases || [],
  };
}

export function hardware(h) {
  if (!h) return "–";
  const parts = [`${int(h.cpu)} CPU`, `${(Number(h.mem) / 1024).toFixed(Number(h.mem) % 1024 ? 1 : 0)} GiB`];
  if (Number(h.gpu) > 0) parts.push(`${h.gpu}× ${h.gpu_model || "GPU"}`);
  if (h.region) parts.push(h.region);
  return parts.join(" · ");
}

function perBlock(units, blockTime) {
  const hourly = blockTime ? (BigInt(units) * BigInt(Math.round(3600 / blockTime))) : null;
  return html`<span class="num" title="${tokens(units, { decimals: 9, trim: true })} tokens a block">${tokens(units)}</span>${
    hourly !== null ? html` <span class="muted small">≈ ${tokens(hourly, { decimals: 2 })}/h</span>` : ""
  }`;
}

// The cheapest open bid on an order (reverse auction: the tenant takes the lowest), with its
// provider (from the order's detail, which lists its bids).
function bestBid(order, blockTime) {
  const bids = (order.bid_details || []).filter((b) => b.status === "open");
  if (!bids.length) return html`<span class="muted">–</span>`;
  const best = bids.reduce((a, b) => (BigInt(b.price) < BigInt(a.price) ? b : a));
  return html`${perBlock(best.price, blockTime)} <span class="muted small">by</span> ${accountLink(best.provider)} <span class="muted small">bid ${best.id}</span>`;
}

// What is left of a lease's escrow, as a bar that drains block by block, and when it runs dry.
function escrowLeft(lease) {
  const paid = Number(lease.paid || 0);
  const left = Number(lease.remaining || 0);
  const price = Number(lease.price || 0);
  const blocks = price > 0 ? Math.floor(left / price) : null;
  return html`${bar(paid + left > 0 ? left / (paid + left) : 0, tokens(lease.remaining))}<div class="muted small" data-testid="escrow-blocks">${
    blocks === null ? "" : blocks === 0 ? "runs dry now" : html`${int(blocks)} block${blocks === 1 ? "" : "s"} to go`
  }</div>`;
}

export function noMarket() {
  return placeholder(
    "▦",
    "No marketplace yet",
    "Orders, bids and leases of GPU and CPU time, paid from escrow, will show here.",
    "This node's API has no /v1/market routes.",
  );
}

export function marketSummary(market, { link = true } = {}) {
  if (!market.available) return noMarket();
  const active = market.providers.filter((p) => p.active).length;
  const gpus = market.providers.reduce((sum, p) => sum + Number((p.hardware || {}).gpu || 0), 0);
  return html`<div class="cards compact">
      ${card("Providers", html`${active} <span class="muted">/ ${market.providers.length}</span>`, `active · ${gpus} GPUs offered`)}
      ${card("Open orders", int(market.orders.length), "waiting for bids")}
      ${card("Open leases", int(market.leases.length), "paid block by block from escrow")}
    </div>
    ${link ? html`<div class="panel-foot"><a href="#/market" class="button">open the market</a></div>` : ""}`;
}

export class MarketView {
  constructor(element, params, ctx) {
    this.ctx = ctx;
    this.element = element;
    setHtml(
      element,
      html`<div class="page-head"><div><h1>Compute marketplace</h1>
        <div class="page-sub">GPU and CPU time rented by the block: orders, reverse-auction bids, leases paid from escrow</div></div></div>
        <div id="market-body">${empty("Loading…")}</div>`,
    );
  }

  async refresh() {
    const market = await readMarket(this.ctx.api);
    const body = this.element.querySelector("#market-body");
    if (!market.available) {
      setHtml(body, panel("Marketplace", noMarket(), { id: "market-panel" }));
      return;
    }
    const blockTime = this.ctx.state.status ? this.ctx.state.status.block_time : null;
    setHtml(
      body,
      html`<div class="stack">${marketSummary(market, { link: false })}
      ${panel(
        "Providers",
        market.providers.length
          ? html`<div class="table-scroll"><table class="data" id="market-providers">
            <thead><tr><th>Provider</th><th>Hardware</th><th>In use</th><th class="n">Stake</th>
            <th class="n">Leases</th><th class="n">Uptime</th><th>State</th></tr></thead>
            <tbody>${market.providers.map(
              (p) => html`<tr>
                <td>${accountLink(p.address)}</td><td>${hardware(p.hardware)}</td>
                <td class="muted">${hardware(p.used)}</td><td class="n">${amount(p.stake, { decimals: 2 })}</td>
                <td class="n">${int(p.open_leases)}</td>
                <td class="n">${p.history && p.history.uptime_ppm != null ? `${(Number(p.history.uptime_ppm) / 10000).toFixed(2)}%` : "–"}</td>
                <td>${p.active ? html`<span class="chip chip-v">active</span>` : html`<span class="chip">inactive</span>`}</td>
              </tr>`,
            )}</tbody></table></div>`
          : empty("No provider has registered."),
        { id: "market-providers-panel" },
      )}
      ${panel(
        "Open orders",
        market.orders.length
          ? html`<div class="table-scroll"><table class="data" id="market-orders">
            <thead><tr><th class="n">Order</th><th>Tenant</th><th>Needs</th><th class="n">Count</th>
            <th class="n">Max price / block</th><th class="n">Bids</th><th>Best bid</th><th class="n">Matching</th><th>Since</th></tr></thead>
            <tbody>${market.orders.map(
              (o) => html`<tr>
                <td class="n"><b>${o.id}</b></td><td>${accountLink(o.tenant)}</td><td>${hardware(o.need)}</td>
                <td class="n">${int(o.count)}</td><td class="n">${perBlock(o.max_price, blockTime)}</td>
                <td class="n">${int((o.bids || []).length)}</td><td>${bestBid(o, blockTime)}</td><td class="n">${int(o.matching_providers)}</td>
                <td>${blockLink(o.created_at)}</td>
              </tr>`,
            )}</tbody></table></div>`
          : empty("No open order."),
        { id: "market-orders-panel" },
      )}
      ${panel(
        "Open leases",
        market.leases.length
          ? html`<div class="table-scroll"><table class="data" id="market-leases">
            <thead><tr><th class="n">Lease</th><th>Tenant</th><th>Provider</th><th>Hardware</th>
            <th class="n">Price / block</th><th class="n">Paid</th><th class="n" title="escrow left, draining every block">Escrow left</th><th>Until</th></tr></thead>
            <tbody>${market.leases.map(
              (l) => html`<tr>
                <td class="n"><b>${l.id}</b></td><td>${accountLink(l.tenant)}</td><td>${accountLink(l.provider)}</td>
                <td>${hardware(l.hardware)}</td><td class="n">${perBlock(l.price, blockTime)}</td>
                <td class="n">${amount(l.paid)}</td><td class="n">${escrowLeft(l)}</td>
                <td>${blockLink(l.expires_at)}</td>
              </tr>`,
            )}</tbody></table></div>`
          : empty("No open lease."),
        { id: "market-leases-panel" },
      )}</div>`,
    );
  }
}

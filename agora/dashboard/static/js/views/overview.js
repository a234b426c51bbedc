// The network at a glance: chain figures, recent blocks and transactions, subnets, and the
// sections that later services fill (gateway, marketplace).

import { barChart } from "../charts.js";
import {
  accountLink,
  ago,
  agoSpan,
  big,
  blockLink,
  compact,
  duration,
  html,
  int,
  percent,
  shortHash,
  subnetLink,
  tokens,
} from "../format.js";
import { amount, bar, card, empty, panel, setHtml, txRow } from "../ui.js";
import { gatewaySummary, readGateway } from "./gateway.js";
import { marketSummary, readMarket } from "./market.js";

// Average seconds between the last `count` blocks, from their header timestamps.
export function measuredBlockTime(blocks, count = 20) {
  const recent = blocks.slice(-count);
  if (recent.length < 2) return null;
  const first = recent[0];
  const last = recent[recent.length - 1];
  return (Number(last.timestamp) - Number(first.timestamp)) / 1000 / (last.height - first.height);
}

export function chainCards(status, blocks, subnets) {
  const blockTime = measuredBlockTime(blocks) ?? status.block_time;
  const pending = (subnets || []).reduce((sum, s) => sum + big(s.pending_emission), 0n);
  const issued = big(status.total_issuance) + pending;
  const cap = big(status.supply_cap);
  const share = Number(issued) / Number(cap);
  let halving;
  if (status.next_halving_at === null || status.next_halving_at === undefined) {
    halving = card("Next halving", "none", "the reward no longer halves", {});
  } else {
    const left = big(status.next_halving_at) - issued;
    const reward = big(status.block_reward);
    const blocksLeft = reward > 0n ? (left + reward - 1n) / reward : 0n;
    halving = card(
      "Next halving",
      html`≈ ${duration(Number(blocksLeft) * blockTime)}`,
      html`in ${compact(blocksLeft)} blocks · at ${tokens(status.next_halving_at, { decimals: 0 })} issued`,
      { testid: "next-halving" },
    );
  }
  return html`
    ${card(
      "Height",
      html`<span data-live-height>${int(status.height)}</span>`,
      html`head ${blockLink(status.height, shortHash(status.head_hash))} · ${agoSpan(status.head_timestamp)}`,
      { accent: true },
    )}
    ${card(
      "Block time",
      html`${blockTime.toFixed(2)} s`,
      html`target ${status.block_time} s · last ${Math.min(20, blocks.length)} blocks`,
    )}
    ${card(
      "Total issuance",
      html`${amount(status.total_issuance, { decimals: 2 })}`,
      html`${percent(share)} of the ${tokens(cap, { decimals: 0 })} cap · ${tokens(status.total_burned, { decimals: 2 })} burned`,
      { progress: share, testid: "issuance" },
    )}
    ${card(
      "Block reward",
      html`${amount(status.block_reward, { trim: true, decimals: 9 })}`,
      html`tokens per block, split among ${int(status.subnets)} subnet${status.subnets === 1 ? "" : "s"}`,
    )}
    ${halving}
    ${card(
      "Mempool",
      int(status.mempool_size),
      html`pending transactions · ${status.role}${status.upstream ? html` of ${status.upstream}` : ""}`,
    )}
  `;
}

// `fresh`: the height that just arrived, flashed once.
export function blocksTable(blocks, { limit = 12, fresh = null } = {}) {
  const rows = blocks.slice(-limit).reverse();
  if (!rows.length) return empty("No blocks yet.");
  return html`<div class="table-scroll"><table class="data" id="recent-blocks">
    <thead><tr><th>Height</th><th>Hash</th><th>Time</th><th class="n">Txs</th></tr></thead>
    <tbody>${rows.map(
      (b) => html`<tr class="${b.height === fresh ? "fresh" : ""}" data-height="${b.height}">
        <td>${blockLink(b.height)}</td>
        <td class="mono muted">${shortHash(b.hash, 10, 6)}</td>
        <td class="muted">${agoSpan(b.timestamp)}</td>
        <td class="n">${b.tx_count > 0 ? html`<span class="chip chip-accent">${b.tx_count}</span>` : html`<span class="muted">0</span>`}</td>
      </tr>`,
    )}</tbody></table></div>`;
}

export function subnetsTable(subnets) {
  if (!subnets.length) {
    return empty(
      html`No subnets yet. Create one with <code>agora subnet create</code> (the dev network's
      <code>agora up</code> makes one).`,
    );
  }
  return html`<div class="table-scroll"><table class="data" id="subnets-table">
    <thead><tr><th>Subnet</th><th>Owner</th><th>Neurons</th><th class="n">Tempo</th>
    <th class="n">Pending emission</th><th class="n">Registration burn</th><th class="n">Locked</th></tr></thead>
    <tbody>${subnets.map(
      (s) => html`<tr>
        <td>${subnetLink(s.netuid, html`<b>SN${s.netuid}</b>`)}</td>
        <td>${accountLink(s.owner)}</td>
        <td>${bar(s.neurons / s.max_uids, `${s.neurons} / ${s.max_uids}`)}</td>
        <td class="n">${s.tempo}</td>
        <td class="n">${amount(s.pending_emission)}</td>
        <td class="n">${amount(s.registration_burn)}</td>
        <td class="n">${amount(s.locked, { decimals: 2 })}</td>
      </tr>`,
    )}</tbody></table></div>`;
}

export function gatewayPanel() {
  return panel("Gateway", html`<div id="gateway-summary">${empty("Loading…")}</div>`, {
    id: "gateway-panel",
    subtitle: "OpenAI-compatible API traffic",
  });
}

export function marketPanel() {
  return panel("Compute marketplace", html`<div id="market-summary">${empty("Loading…")}</div>`, {
    id: "market-panel",
    subtitle: "providers, orders, leases",
  });
}

export class OverviewView {
  constructor(element, params, ctx) {
    this.ctx = ctx;
    setHtml(
      element,
      html`<div class="page-head">
          <div><h1>Network</h1><div class="page-sub" id="chain-line">connecting to the node…</div></div>
        </div>
        <div class="cards" id="chain-cards"></div>
        <div class="grid two">
          ${panel("Recent blocks", html`<div class="chart" id="tx-chart"><canvas></canvas></div><div id="blocks-list"></div>`, { id: "blocks-panel", subtitle: "transactions per block, newest on the right" })}
          ${panel("Recent transactions", html`<div id="tx-list">${empty("Loading…")}</div>`, { id: "txs-panel", subtitle: "from the latest blocks" })}
        </div>
        ${panel("Subnets", html`<div id="subnets-list">${empty("Loading…")}</div>`, { id: "subnets-panel", actions: html`<a href="#/subnets" class="button">all subnets</a>` })}
        <div class="grid two">${gatewayPanel()}${marketPanel()}</div>`,
    );
    this.element = element;
  }

  renderChain() {
    const { status, blocks, subnets } = this.ctx.state;
    if (!status) return;
    setHtml(
      this.element.querySelector("#chain-line"),
      html`chain <b>${status.chain_id}</b> · produced by ${accountLink(status.producer)} · genesis
        <span class="mono">${shortHash(status.genesis_hash)}</span>`,
    );
    setHtml(this.element.querySelector("#chain-cards"), chainCards(status, blocks, subnets));
  }

  renderBlocks(fresh = null) {
    const blocks = this.ctx.state.blocks;
    this.renderedHead = blocks.length ? blocks[blocks.length - 1].height : 0;
    const recent = blocks.slice(-60);
    const canvas = this.element.querySelector("#tx-chart canvas");
    barChart(
      canvas,
      recent.map((b) => ({
        value: b.tx_count,
        href: `#/block/${b.height}`,
        html: `<div class="tt-title">block #${b.height}</div>${b.tx_count} transaction${b.tx_count === 1 ? "" : "s"} · ${ago(b.timestamp)}`,
      })),
    );
    setHtml(this.element.querySelector("#blocks-list"), blocksTable(blocks, { fresh }));
  }

  onBlock(event) {
    this.renderBlocks(event.height);
    this.renderChain();
  }

  async refresh() {
    const { api, state } = this.ctx;
    this.renderChain();
    const blocks = state.blocks;
    if (!blocks.length || blocks[blocks.length - 1].height !== this.renderedHead) this.renderBlocks();
    setHtml(this.element.querySelector("#subnets-list"), subnetsTable(state.subnets || []));
    const txs = await api.recentTransactions(state.blocks, 12);
    setHtml(
      this.element.querySelector("#tx-list"),
      txs.length
        ? html`<div class="table-scroll"><table class="data" id="recent-txs">
            <thead><tr><th>Block</th><th>Kind</th><th>Sender</th><th>What</th></tr></thead>
            <tbody>${txs.map((tx) => txRow(tx))}</tbody></table></div>`
        : empty(
            `No transactions in the last ${state.blocks.length} blocks.`,
          ),
    );
    const [gateway, market] = await Promise.all([readGateway(this.ctx), readMarket(api)]);
    setHtml(this.element.querySelector("#gateway-summary"), gatewaySummary(this.ctx, gateway));
    setHtml(this.element.querySelector("#market-summary"), marketSummary(market));
  }
}

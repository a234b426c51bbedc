// One address: as a coldkey (balance, stake it holds, neurons it owns) and as a hotkey (stake
// behind it, registrations with their scores), plus its transactions in recent blocks.

import {
  accountLink,
  big,
  blockLink,
  fixed,
  html,
  int,
  isAddress,
  labelOf,
  subnetLink,
  swatch,
} from "../format.js";
import { amount, bar, card, empty, kindChip, panel, setHtml, txSummary } from "../ui.js";
import { readGateway } from "./gateway.js";
import {
  disputesTable,
  measurementsTable,
  noMeasurements,
  readDisputes,
  readReceipts,
  readValidators,
  receiptsTable,
} from "./work.js";

const ACTIVITY_BLOCKS = 100;

function mentions(tx, address) {
  if (tx.sender === address) return true;
  return Object.values(tx.body || {}).some((value) => value === address);
}

function stakeTable(items, keyName, keyOf) {
  if (!items.length) return null;
  return html`<div class="table-scroll"><table class="data">
    <thead><tr><th>${keyName}</th><th class="n">Amount</th></tr></thead>
    <tbody>${items.map(
      (s) => html`<tr><td>${accountLink(keyOf(s))}</td><td class="n">${amount(s.amount)}</td></tr>`,
    )}</tbody></table></div>`;
}

export class AccountView {
  constructor(element, params, ctx) {
    this.ctx = ctx;
    this.address = params.address;
    this.element = element;
    const label = labelOf(this.address);
    if (!isAddress(this.address)) {
      setHtml(
        element,
        html`<div class="page-head"><div><h1>Not an address</h1></div></div>
        ${empty("An address is 64 lowercase hex characters (an Ed25519 public key).")}`,
      );
      this.invalid = true;
      return;
    }
    setHtml(
      element,
      html`<div class="page-head">
          <div class="account-title">
            ${swatch(this.address)}
            <div>
              <h1>${label ? html`${label} <span class="muted">account</span>` : "Account"}</h1>
              <div class="mono address" id="account-address" data-testid="account-address">${this.address}</div>
              <div class="page-sub" id="account-roles"></div>
            </div>
          </div>
          <div class="page-actions"><button class="button" id="copy-address" type="button">copy address</button></div>
        </div>
        <div class="cards" id="account-cards"></div>
        ${panel("Neurons", html`<div id="account-neurons">${empty("Loading…")}</div>`, {
          id: "neurons-panel",
          subtitle: "where this key is registered (as hotkey) or owns a registered hotkey (as coldkey)",
        })}
        <div id="account-miner-slot"></div>
        <div class="grid two">
          ${panel("Stake it holds", html`<div id="account-stakes"></div>`, { subtitle: "as a coldkey, on hotkeys" })}
          ${panel("Stake behind it", html`<div id="account-stakers"></div>`, { subtitle: "as a hotkey, from coldkeys" })}
        </div>
        <div id="account-channels-slot"></div>
        ${panel("Recent activity", html`<div id="account-activity">${empty("Loading…")}</div>`, {
          id: "activity-panel",
          subtitle: `transactions that send from or name this address, in the last ${ACTIVITY_BLOCKS} blocks`,
        })}`,
    );
    element.querySelector("#copy-address").addEventListener("click", async (event) => {
      try {
        await navigator.clipboard.writeText(this.address);
        event.target.textContent = "copied";
      } catch {
        const range = document.createRange();
        range.selectNodeContents(element.querySelector("#account-address"));
        window.getSelection().removeAllRanges();
        window.getSelection().addRange(range);
        event.target.textContent = "selected: press Ctrl-C";
      }
    });
  }

  async refresh() {
    if (this.invalid) return;
    const { api, state } = this.ctx;
    const [account, metagraphs] = await Promise.all([
      api.account(this.address),
      Promise.all((state.subnets || []).map((s) => api.metagraph(s.netuid).catch(() => null))),
    ]);
    this.renderAccount(account, metagraphs.filter(Boolean));
    await this.renderMiner(account);
    await this.renderChannels();
    await this.renderActivity();
  }

  renderAccount(a, metagraphs) {
    const roles = [];
    if (a.hotkey_owner) roles.push(html`hotkey of ${accountLink(a.hotkey_owner)}`);
    if (a.owned_subnets.length) {
      roles.push(html`owns ${a.owned_subnets.map((n, i) => html`${i ? ", " : ""}${subnetLink(n)}`)}`);
    }
    if (a.registrations.length) {
      roles.push(
        html`registered on ${a.registrations.map(
          (r, i) => html`${i ? ", " : ""}${subnetLink(r.netuid)} <span class="muted">uid ${r.uid}</span>`,
        )}`,
      );
    }
    setHtml(
      this.element.querySelector("#account-roles"),
      roles.length ? roles.map((r, i) => html`${i ? " · " : ""}${r}`) : "no stake, registration or subnet",
    );
    setHtml(
      this.element.querySelector("#account-cards"),
      html`${card("Balance", amount(a.balance), "tokens, free to spend", { testid: "balance", accent: true })}
      ${card("Staked", amount(a.total_staked), `as a coldkey, on ${a.stakes.length} hotkey${a.stakes.length === 1 ? "" : "s"}`)}
      ${card("Stake behind", amount(a.stake_behind), `as a hotkey, from ${a.stakers.length} coldkey${a.stakers.length === 1 ? "" : "s"}`)}
      ${card("Total", amount(big(a.balance) + big(a.total_staked)), "balance plus stake it holds")}
      ${card("Next nonce", int(a.pending_nonce), a.pending ? `${a.pending} pending in the mempool` : "nothing pending")}`,
    );
    const neurons = [];
    for (const m of metagraphs) {
      for (const n of m.neurons) {
        if (n.hotkey === this.address || n.coldkey === this.address) {
          neurons.push({ netuid: m.netuid, role: n.hotkey === this.address ? "hotkey" : "coldkey", n });
        }
      }
    }
    setHtml(
      this.element.querySelector("#account-neurons"),
      neurons.length
        ? html`<div class="table-scroll"><table class="data" id="account-neuron-table">
          <thead><tr><th>Subnet</th><th class="n">UID</th><th>As</th><th>Hotkey</th><th class="n">Stake</th>
          <th class="n">Incentive</th><th class="n">Dividends</th><th class="n">Emission</th><th class="n">Updated</th></tr></thead>
          <tbody>${neurons.map(
            ({ netuid, role, n }) => html`<tr>
              <td>${subnetLink(netuid)}</td>
              <td class="n"><a href="#/subnet/${netuid}?uid=${n.uid}"><b>${n.uid}</b></a>${n.validator_permit ? html` <span class="chip chip-v" title="validator permit">V</span>` : ""}</td>
              <td><span class="chip">${role}</span></td>
              <td>${accountLink(n.hotkey)}</td>
              <td class="n">${amount(n.stake, { decimals: 2 })}</td>
              <td class="n">${bar(n.incentive_float, fixed(n.incentive_float))}</td>
              <td class="n">${bar(n.dividends_float, fixed(n.dividends_float))}</td>
              <td class="n">${amount(n.emission)}</td>
              <td class="n">${blockLink(n.last_update)}</td>
            </tr>`,
          )}</tbody></table></div>`
        : empty("Not registered on any subnet, and owns no registered hotkey."),
    );
    setHtml(
      this.element.querySelector("#account-stakes"),
      stakeTable(a.stakes, "Hotkey", (s) => s.hotkey) || empty("No stake held."),
    );
    setHtml(
      this.element.querySelector("#account-stakers"),
      stakeTable(a.stakers, "Coldkey", (s) => s.coldkey) || empty("Nobody stakes behind it."),
    );
  }

  // As a miner (the address is a registered hotkey): what validators measured, what the gateway
  // measured and charges, its recent receipts and any disputes against it.
  async renderMiner(account) {
    const slot = this.element.querySelector("#account-miner-slot");
    const registrations = account.registrations || [];
    if (!registrations.length) {
      setHtml(slot, "");
      return;
    }
    const netuids = [...new Set(registrations.map((r) => r.netuid))];
    const [gateway, receipts, disputes, ...validators] = await Promise.all([
      readGateway(this.ctx),
      readReceipts(this.ctx, { miner: this.address, limit: 15 }),
      readDisputes(this.ctx, { miner: this.address, limit: 20 }),
      ...netuids.map((n) => readValidators(n)),
    ]);
    const measured = netuids.map((netuid, i) => {
      const result = validators[i];
      const table = result.ok && measurementsTable(result.validators, { hotkey: this.address });
      const rows = result.ok
        ? result.validators.flatMap((v) => (v.scores || []).filter((s) => s.hotkey === this.address))
        : [];
      return { netuid, result, table, rows };
    });
    // Where this hotkey is itself a validator with a public API: what it measured.
    const asValidator = netuids.flatMap((netuid, i) =>
      validators[i].ok ? validators[i].validators.filter((v) => v.hotkey === this.address).map((v) => ({ netuid, v })) : [],
    );
    const validatorPanel = asValidator.length
      ? panel(
          "As a validator",
          asValidator.map(
            ({ netuid, v }) => html`<h3 class="small">On SN${netuid}: <span class="mono">${v.url}</span>${
              v.error ? html` <span class="chip chip-bad">${v.error}</span>` : html` · round ${int(v.round || 0)} · reference <span class="mono">${v.model || "?"}</span>`
            }</h3>${v.error ? "" : measurementsTable([v], { netuid }) || empty("It has not probed any miner yet.")}`,
          ),
          { id: "validator-panel", subtitle: "what it measured of the subnet's miners, from the public API it announces" },
        )
      : "";
    const served = gateway.reachable ? gateway.miners.filter((m) => m.hotkey === this.address) : [];
    const allRows = measured.flatMap((m) => m.rows);
    const best = (key) => {
      const values = allRows.map((r) => r[key]).filter((v) => v !== null && v !== undefined).map(Number);
      return values.length ? values.sort((a, b) => a - b)[Math.floor(values.length / 2)] : null;
    };
    const p50 = best("latency_p50_ms");
    const p95 = best("latency_p95_ms");
    const throughput = best("throughput_p50");
    const price = served.find((m) => m.price_per_1k_tokens !== null && m.price_per_1k_tokens !== undefined);
    const cards = html`<div class="cards compact" id="miner-cards">
      ${card("Latency p50", p50 === null ? "–" : `${p50.toFixed(0)} ms`, p95 === null ? "as validators measure it" : `p95 ${p95.toFixed(0)} ms`, { testid: "miner-p50" })}
      ${card("Throughput", throughput === null ? "–" : `${throughput.toFixed(0)} tok/s`, "median of validators' last probes")}
      ${card("Score", allRows.length ? Number(best("score")).toFixed(3) : "–", `median over ${allRows.length} validator report${allRows.length === 1 ? "" : "s"}`)}
      ${card("Price", price ? amount(price.price_per_1k_tokens, { decimals: 6, trim: true }) : "–", "tokens per 1k tokens, as the gateway reads it")}
      ${card("Served", served.length ? served.reduce((n, m) => n + Number(m.served || 0), 0).toLocaleString("en-US") : "–", served.length ? `${served.reduce((n, m) => n + Number(m.failed || 0), 0)} failed, through the gateway` : "no gateway data")}
    </div>`;
    if (asValidator.length && !allRows.length && !served.some((m) => m.healthy)) {
      setHtml(slot, validatorPanel); // a validator, not a miner: no empty miner sections
      return;
    }
    setHtml(
      slot,
      html`${validatorPanel}${panel(
        "As a miner",
        html`${cards}${measured.map(
          ({ netuid, result, table }) => html`<h3 class="small">Validators' measurements on SN${netuid}</h3>${table || noMeasurements(result)}`,
        )}`,
        { id: "miner-panel", subtitle: "latency, throughput and verdicts measured by the subnet's validators; price and traffic from the gateway" },
      )}
      <div class="grid two">
        ${panel("Recent receipts", receiptsTable(receipts, { showMiner: false }), { id: "miner-receipts-panel", subtitle: "answers it gave through the gateway, newest first" })}
        ${panel("Disputes", disputesTable(disputes, { showMiner: false }), { id: "miner-disputes-panel", subtitle: "claims that it signed a wrong answer" })}
      </div>`,
    );
  }

  // Payment channels (how the gateway pays miners), on nodes that have them.
  async renderChannels() {
    const slot = this.element.querySelector("#account-channels-slot");
    const found = await this.ctx.api.optional("channels", `accounts/${this.address}/channels`);
    const channels = (found && found.channels) || [];
    if (!channels.length) {
      setHtml(slot, "");
      return;
    }
    setHtml(
      slot,
      panel(
        "Payment channels",
        html`<div class="table-scroll"><table class="data" id="account-channels">
          <thead><tr><th class="n">Channel</th><th>Payer</th><th>Payee</th><th class="n">Deposit</th>
          <th class="n">Redeemed</th><th class="n">Left</th><th>Expires</th><th>State</th></tr></thead>
          <tbody>${channels.map(
            (c) => html`<tr>
              <td class="n"><b>${c.id}</b></td><td>${accountLink(c.payer)}</td><td>${accountLink(c.payee)}</td>
              <td class="n">${amount(c.deposit)}</td><td class="n">${amount(c.redeemed)}</td>
              <td class="n">${amount(c.remaining)}</td><td>${blockLink(c.expires_at)}</td>
              <td>${c.closed ? html`<span class="chip">closed</span>` : html`<span class="chip chip-v">open</span>`}</td>
            </tr>`,
          )}</tbody></table></div>`,
        { id: "channels-panel", subtitle: "prepaid deposits a payee redeems with signed vouchers" },
      ),
    );
  }

  async renderActivity() {
    const { api, state } = this.ctx;
    const recent = state.blocks.slice(-ACTIVITY_BLOCKS);
    const txs = (await api.recentTransactions(recent, 10000, ACTIVITY_BLOCKS)).filter((tx) => mentions(tx, this.address));
    setHtml(
      this.element.querySelector("#account-activity"),
      txs.length
        ? html`<div class="table-scroll"><table class="data" id="account-txs">
          <thead><tr><th>Block</th><th>Kind</th><th>From</th><th>What</th><th class="n">Nonce</th></tr></thead>
          <tbody>${txs.slice(0, 50).map(
            (tx) => html`<tr>
              <td>${blockLink(tx.height)}</td><td>${kindChip(tx.kind)}</td>
              <td>${accountLink(tx.sender)}</td><td class="summary">${txSummary(tx)}</td>
              <td class="n">${tx.nonce}</td></tr>`,
          )}</tbody></table></div>`
        : empty(`No transactions from or naming this address in the last ${recent.length} blocks.`),
    );
  }
}

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

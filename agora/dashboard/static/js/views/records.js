// A receipt's page (#/receipt/<hash>, from the gateway's archive) and a dispute's page
// (#/dispute/<id>, from the node). Every address, block, subnet and receipt in them is a link.

import { isMissingRoute } from "../api.js";
import { accountLink, agoSpan, blockLink, dateTime, html, int, shortHash, subnetLink } from "../format.js";
import { amount, bar, card, empty, keyValues, panel, placeholder, setHtml } from "../ui.js";
import { disputesTable, fields, readDisputes, receiptLink, statusChip } from "./work.js";


export class ReceiptView {
  constructor(element, params, ctx) {
    this.ctx = ctx;
    this.hash = String(params.hash || "").toLowerCase();
    this.element = element;
    setHtml(
      element,
      html`<div class="page-head"><div><h1>Receipt</h1>
        <div class="mono address" id="receipt-hash">${this.hash}</div>
        <div class="page-sub">what a miner signed for one answer: hashes of request and response, model, tokens, price</div></div></div>
        <div class="cards" id="receipt-cards"></div>
        ${panel("Signed fields", html`<div id="receipt-fields">${empty("Loading…")}</div>`, { id: "receipt-panel", className: "records" })}
        ${panel("Check it yourself", html`<div id="receipt-verify"></div>`, {
          id: "receipt-verify-panel",
          subtitle: "the signature is the miner's hotkey's Ed25519 signature over the canonical fields",
        })}
        ${panel("Disputes about this miner", html`<div id="receipt-disputes"></div>`, { id: "receipt-disputes-panel" })}`,
    );
  }

  async refresh() {
    const gateway = this.ctx.gatewayApi;
    const body = this.element.querySelector("#receipt-fields");
    if (!gateway) {
      setHtml(body, placeholder("≡", "No gateway connected", "Receipts are read from the gateway's archive.", html`Start the dashboard with <code>--gateway URL</code>.`));
      return;
    }
    let found;
    try {
      found = await gateway.get(`gateway/receipts/${this.hash}`);
    } catch (error) {
      const why = error.code === "unknown_receipt"
        ? "The gateway has no receipt with this hash (older than its retention, or not written yet)."
        : isMissingRoute(error)
          ? "This gateway keeps no receipt archive (GET /v1/gateway/receipts/{hash})."
          : error.message;
      setHtml(body, placeholder("≡", "Receipt not available", why, ""));
      return;
    }
    const r = found.receipt || {};
    const t = Number(r.timestamp) > 1e12 ? Number(r.timestamp) : Number(r.timestamp) * 1000;
    setHtml(
      this.element.querySelector("#receipt-cards"),
      html`${card("Miner", accountLink(r.miner), html`on ${subnetLink(r.netuid)}`)}
      ${card("Price", amount(r.price, { decimals: 6, trim: true }), "tokens charged for this answer", { accent: true })}
      ${card("Tokens", int(Number(r.prompt_tokens || 0) + Number(r.completion_tokens || 0)), `${int(r.prompt_tokens)} in · ${int(r.completion_tokens)} out`)}
      ${card("When", agoSpan(t), dateTime(t))}
      ${card("Caller", accountLink(r.caller), found.stream ? "streamed answer" : "one JSON answer")}`,
    );
    setHtml(body, fields(r));
    const json = JSON.stringify(r, (k, v) => (typeof v === "bigint" ? v.toString() : v), 2);
    setHtml(
      this.element.querySelector("#receipt-verify"),
      html`<p class="small">Save the receipt and check its signature offline (exit status 0 when it holds):</p>
        <div class="verify-box" id="receipt-json">${json}</div>
        <div class="verify-box">agora receipt verify receipt.json</div>
        <p class="small muted">Model ${shortHash(r.model_id || "", 16, 8)} · miner nonce ${r.nonce}</p>`,
    );
    const disputes = await readDisputes(this.ctx, { miner: r.miner, netuid: r.netuid });
    setHtml(this.element.querySelector("#receipt-disputes"), disputesTable(disputes, { showMiner: false }));
  }
}

export class DisputeView {
  constructor(element, params, ctx) {
    this.ctx = ctx;
    this.id = String(params.id);
    this.element = element;
    setHtml(
      element,
      html`<div class="page-head"><div><h1>Dispute <span class="mono" id="dispute-id">${this.id}</span></h1>
        <div class="page-sub">a validator's claim, with evidence, that a miner signed a wrong answer; validators vote, and an upheld dispute slashes the miner's stake</div></div></div>
        <div class="cards" id="dispute-cards"></div>
        <div class="grid two">
          ${panel("Votes", html`<div id="dispute-votes"></div>`, { id: "dispute-votes-panel", subtitle: "validators with a permit; stake counts as held at resolution" })}
          ${panel("Outcome", html`<div id="dispute-outcome"></div>`, { id: "dispute-outcome-panel" })}
        </div>
        ${panel("What the ledger records", html`<div id="dispute-fields">${empty("Loading…")}</div>`, { id: "dispute-panel", className: "records" })}`,
    );
  }

  async refresh() {
    let d;
    try {
      d = await this.ctx.api.get(`disputes/${encodeURIComponent(this.id)}`);
    } catch (error) {
      const why = isMissingRoute(error) && !/dispute/.test(error.message || "")
        ? "This node has no dispute routes yet (GET /v1/disputes/{id})."
        : error.message;
      setHtml(this.element.querySelector("#dispute-fields"), placeholder("§", "Dispute not available", why, ""));
      return;
    }
    const dispute = d.dispute || d;
    const receipt = dispute.receipt_hash || null;
    const head = this.ctx.state.status ? this.ctx.state.status.height : null;
    setHtml(
      this.element.querySelector("#dispute-cards"),
      html`${card("Status", html`<span data-testid="dispute-status">${statusChip(dispute.status)}</span>`, dispute.netuid !== undefined ? html`on ${subnetLink(dispute.netuid)}` : "")}
      ${card("Miner", accountLink(dispute.miner), dispute.miner_uid !== undefined ? html`<a href="#/subnet/${dispute.netuid}?uid=${dispute.miner_uid}">uid ${dispute.miner_uid}</a>` : "whose answer is disputed")}
      ${card("Opened by", accountLink(dispute.challenger), dispute.opened_at !== undefined ? html`at ${blockLink(dispute.opened_at)}` : "")}
      ${receipt ? card("Receipt", receiptLink(receipt), dispute.receipt_block !== undefined ? html`decided at ${blockLink(dispute.receipt_block)}` : "") : ""}
      ${dispute.deposit !== undefined ? card("Deposit", amount(dispute.deposit), dispute.deposit_to ? html`went to ${accountLink(dispute.deposit_to)}` : "held until the outcome") : ""}
      ${dispute.status === "open" && dispute.deadline !== undefined
        ? card("Voting ends", blockLink(dispute.deadline), head !== null ? `in ${Math.max(0, dispute.deadline - head)} blocks` : "")
        : card("Slashed", amount(dispute.slashed || 0), dispute.burned ? html`${amount(dispute.burned)} burned` : "")}`,
    );
    const votes = dispute.votes || [];
    const tally = dispute.tally;
    setHtml(
      this.element.querySelector("#dispute-votes"),
      html`${tally
        ? html`<div class="small">guilty ${amount(tally.guilty, { decimals: 2 })} · not guilty ${amount(tally.not_guilty, { decimals: 2 })} of ${amount(tally.total, { decimals: 2 })} stake (more than ${amount(tally.needed, { decimals: 2 })} decides)</div>
          ${bar(Number(tally.total) ? Number(tally.guilty) / Number(tally.total) : 0, "guilty share")}`
        : ""}
      ${votes.length
        ? html`<div class="table-scroll"><table class="data" id="dispute-vote-table">
          <thead><tr><th>Validator</th><th>Verdict</th><th class="n">Stake then</th><th class="n">Stake now</th><th>Block</th><th>Counts</th></tr></thead>
          <tbody>${votes.map((v) => html`<tr><td>${accountLink(v.hotkey)}</td>
            <td>${v.guilty ? html`<span class="chip chip-bad">guilty</span>` : html`<span class="chip chip-v">not guilty</span>`}</td>
            <td class="n">${amount(v.stake, { decimals: 2 })}</td><td class="n">${v.stake_now !== undefined ? amount(v.stake_now, { decimals: 2 }) : "–"}</td>
            <td>${blockLink(v.block)}</td><td>${v.counts === false ? html`<span class="muted">no permit</span>` : "yes"}</td></tr>`)}</tbody></table></div>`
        : empty("No vote yet.")}`,
    );
    const payouts = dispute.payouts || [];
    setHtml(
      this.element.querySelector("#dispute-outcome"),
      dispute.status === "open"
        ? empty("Open: the outcome is decided when voting ends.")
        : html`${keyValues([
            ["outcome", statusChip(dispute.status)],
            ["resolved at", Number(dispute.resolved_at) >= 0 ? blockLink(dispute.resolved_at) : "–"],
            ["reason", dispute.reason || "–"],
            ["slashed", amount(dispute.slashed || 0)],
            ["burned", amount(dispute.burned || 0)],
          ])}
          ${payouts.length
            ? html`<div class="table-scroll"><table class="data"><thead><tr><th>Paid to</th><th class="n">Amount</th></tr></thead>
              <tbody>${payouts.map((p) => html`<tr><td>${accountLink(p.hotkey)}</td><td class="n">${amount(p.amount)}</td></tr>`)}</tbody></table></div>`
            : ""}`,
    );
    setHtml(this.element.querySelector("#dispute-fields"), fields(dispute, { skip: ["votes", "payouts", "tally"] }));
  }
}

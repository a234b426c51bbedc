// One block: its header and its transactions, with links to everything they name.

import {
  accountLink,
  agoSpan,
  blockLink,
  dateTime,
  escapeHtml,
  html,
  int,
  isAddress,
  raw,
} from "../format.js";
import { empty, keyValues, kindChip, panel, setHtml, txSummary } from "../ui.js";

// The body as JSON, with addresses turned into links (escaped first, then linked).
function bodyJson(body) {
  const text = escapeHtml(JSON.stringify(body, (k, v) => (typeof v === "bigint" ? v.toString() : v), 2));
  return raw(
    text.replace(/&quot;([0-9a-f]{64})&quot;/g, (match, address) =>
      isAddress(address) ? `&quot;<a href="#/account/${address}">${address}</a>&quot;` : match,
    ),
  );
}

function weightsDetail(body) {
  const uids = body.uids || [];
  const weights = body.weights || [];
  const total = weights.reduce((sum, w) => sum + Number(w), 0) || 1;
  return html`<div class="weights-list">${uids.map(
    (uid, i) =>
      html`<span class="chip">uid ${uid} <b>${((100 * Number(weights[i])) / total).toFixed(1)}%</b></span>`,
  )}</div>`;
}

export class BlockView {
  constructor(element, params, ctx) {
    this.ctx = ctx;
    this.height = Number(params.height);
    this.element = element;
    this.loaded = false;
    setHtml(
      element,
      html`<div class="page-head">
          <div><h1 id="block-title">Block <span id="block-height">#${int(this.height)}</span></h1>
          <div class="page-sub" id="block-line">loading…</div></div>
          <div class="page-actions">
            <a class="button" id="block-prev" href="#/block/${this.height - 1}" ${this.height <= 1 ? raw('aria-disabled="true"') : ""}>← #${int(this.height - 1)}</a>
            <a class="button" id="block-next" href="#/block/${this.height + 1}">#${int(this.height + 1)} →</a>
          </div>
        </div>
        <div id="block-body"></div>`,
    );
  }

  async refresh() {
    if (this.loaded) return; // a block never changes
    const { api, state } = this.ctx;
    const head = state.status ? state.status.height : null;
    this.element.querySelector("#block-next").setAttribute(
      "aria-disabled",
      head !== null && this.height >= head ? "true" : "false",
    );
    if (!Number.isInteger(this.height) || this.height < 1) {
      setHtml(this.element.querySelector("#block-line"), "");
      setHtml(
        this.element.querySelector("#block-body"),
        empty("Heights start at 1 (height 0 is the genesis state)."),
      );
      return;
    }
    let block;
    try {
      block = await api.block(this.height);
    } catch (error) {
      if (error.code === "unknown_block") {
        setHtml(this.element.querySelector("#block-line"), "");
        setHtml(
          this.element.querySelector("#block-body"),
          empty(
            html`No block at this height yet; the head is at ${head === null ? "?" : blockLink(head)}.
            This page shows it as soon as it is produced.`,
          ),
        );
        return;
      }
      throw error;
    }
    this.loaded = true;
    const h = block.header;
    setHtml(
      this.element.querySelector("#block-line"),
      html`${dateTime(h.timestamp)} · ${agoSpan(h.timestamp)} ·
        ${int(block.txs.length)} transaction${block.txs.length === 1 ? "" : "s"}`,
    );
    setHtml(
      this.element.querySelector("#block-body"),
      html`${panel(
        "Header",
        keyValues([
          ["hash", html`<span class="mono wrap">${block.hash}</span>`],
          ["parent", h.height > 1 ? html`${blockLink(h.height - 1)} <span class="mono wrap muted">${h.parent_hash}</span>` : html`<span class="mono wrap">${h.parent_hash}</span> (genesis)`],
          ["time", html`${dateTime(h.timestamp)} <span class="muted mono">(${String(h.timestamp)} ms)</span>`],
          ["producer", accountLink(h.producer, { full: true })],
          ["chain", h.chain_id],
          ["transactions root", html`<span class="mono wrap">${h.tx_root}</span>`],
          ["state root", html`<span class="mono wrap">${h.state_root}</span>`],
          ["signature", html`<span class="mono wrap muted">${block.signature}</span>`],
        ]),
        { id: "block-header" },
      )}
      ${panel(
        "Transactions",
        block.txs.length
          ? html`<div class="table-scroll"><table class="data" id="block-txs">
              <thead><tr><th class="n">#</th><th>Kind</th><th>Sender</th><th class="n">Nonce</th><th>What</th></tr></thead>
              <tbody>${block.txs.map(
                (tx, i) => html`<tr>
                  <td class="n muted">${i}</td><td>${kindChip(tx.kind)}</td>
                  <td>${accountLink(tx.sender)}</td><td class="n">${tx.nonce}</td>
                  <td class="summary">${txSummary(tx)}
                    ${tx.kind === "set_weights" || tx.kind === "reveal_weights" ? weightsDetail(tx.body) : ""}
                    <details><summary>body</summary><pre class="json">${bodyJson(tx.body)}</pre></details>
                  </td></tr>`,
              )}</tbody></table></div>`
          : empty("An empty block: no transactions were pending when it was made."),
        { id: "block-transactions" },
      )}`,
    );
  }

  onBlock() {
    const head = this.ctx.state.status ? this.ctx.state.status.height : null;
    this.element
      .querySelector("#block-next")
      .setAttribute("aria-disabled", head !== null && this.height >= head ? "true" : "false");
  }
}

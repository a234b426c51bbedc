// One subnet: its figures, the metagraph as a sortable table, the weight (or bond) matrix as a
// heat map, and emission over time.
//
// Emission history comes from the node (GET /v1/subnets/{n}/emissions: every epoch's payout per
// uid). Against an older node without that route, the page keeps a history itself: each
// metagraph read after a new epoch adds a point, kept in localStorage per chain and subnet.
//
// Validators' measurements (latency p50/p95, throughput, scores) come from the public APIs
// validators announce in the metagraph, read through the dashboard's /validators/{netuid}.

import { OTHERS_COLOR, PALETTE, heatScaleCss, heatmap, stackedArea } from "../charts.js";
import {
  accountLink,
  big,
  blockLink,
  fixed,
  html,
  int,
  labelOf,
  shortHash,
  tokens,
} from "../format.js";
import {
  SortableTable,
  amount,
  bar,
  card,
  empty,
  keyValues,
  panel,
  placeholder,
  setHtml,
} from "../ui.js";
import { minerPerformance, readGateway } from "./gateway.js";
import { measurementsTable, noMeasurements, readValidators, readReceipts, receiptsTable } from "./work.js";

const MAX_HISTORY = 240;
const TOP_SERIES = 8;

// -- emission history ---------------------------------------------------------------------------

function historyKey(genesis, netuid) {
  return `agora.emission.${genesis}.${netuid}`;
}

export function loadHistory(genesis, netuid) {
  try {
    const data = JSON.parse(localStorage.getItem(historyKey(genesis, netuid)) || "[]");
    return Array.isArray(data) ? data : [];
  } catch {
    return [];
  }
}

// Adds the epoch the metagraph reflects, if it is new. Returns the (possibly longer) history.
export function recordEpoch(history, genesis, subnet, metagraph) {
  const epoch = subnet.last_epoch;
  if (!epoch || metagraph.block < epoch || metagraph.block >= subnet.next_epoch_block) return history;
  if (history.length && history[history.length - 1].block >= epoch) return history;
  const point = { block: epoch, emission: {}, hotkeys: {} };
  for (const n of metagraph.neurons) {
    point.emission[n.uid] = Number(n.emission);
    point.hotkeys[n.uid] = n.hotkey;
  }
  const next = [...history, point].slice(-MAX_HISTORY);
  try {
    localStorage.setItem(historyKey(genesis, subnet.netuid), JSON.stringify(next));
  } catch {
    // storage full or disabled: keep the history for this visit only
  }
  return next;
}

function uidName(uid, hotkey) {
  const label = hotkey && labelOf(hotkey);
  return `uid ${uid}${label ? ` · ${label}` : hotkey ? ` · ${shortHash(hotkey, 4, 4)}` : ""}`;
}

// The biggest earners get their own colour; everyone else is one grey band.
export function emissionSeries(history) {
  const totals = new Map();
  for (const point of history) {
    for (const [uid, value] of Object.entries(point.emission)) {
      totals.set(uid, (totals.get(uid) || 0) + value);
    }
  }
  const ranked = [...totals.entries()].filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
  const top = ranked.slice(0, TOP_SERIES).map(([uid]) => uid);
  const latest = history.length ? history[history.length - 1].hotkeys : {};
  const series = top.map((uid, i) => ({
    name: uidName(uid, latest[uid]),
    uid,
    color: PALETTE[i % PALETTE.length],
    values: history.map((p) => (p.emission[uid] || 0) / 1e9),
  }));
  if (ranked.length > TOP_SERIES) {
    const rest = new Set(ranked.slice(TOP_SERIES).map(([uid]) => uid));
    series.push({
      name: `${rest.size} others`,
      color: OTHERS_COLOR,
      values: history.map((p) =>
        Object.entries(p.emission).reduce((sum, [uid, v]) => sum + (rest.has(uid) ? v : 0), 0) / 1e9,
      ),
    });
  }
  return series.reverse(); // biggest on top of the stack
}

// The node's epoch history in the page's own format, oldest first.
export function historyFromNode(data) {
  return (data.epochs || []).map((e) => ({
    block: e.block,
    emission: Object.fromEntries(e.uids.map((u) => [u.uid, Number(u.emission)])),
    hotkeys: Object.fromEntries(e.uids.map((u) => [u.uid, u.hotkey])),
  }));
}

// -- the metagraph table ------------------------------------------------------------------------

function endpoint(e) {
  if (!e) return html`<span class="muted">–</span>`;
  return html`<span class="mono" title="${e.protocol}://${e.ip}:${e.port}">${e.ip}:${e.port}</span>`;
}

function metagraphColumns(ctx) {
  const fraction = (name) => ({
    key: name,
    label: { validator_trust: "VTrust" }[name] || name[0].toUpperCase() + name.slice(1),
    numeric: true,
    value: (n) => n[`${name}_float`],
    cell: (n) => bar(n[`${name}_float`], fixed(n[`${name}_float`])),
  });
  return [
    { key: "uid", label: "UID", numeric: true, value: (n) => n.uid, cell: (n) => html`<b>${n.uid}</b>` },
    {
      key: "hotkey",
      label: "Hotkey",
      value: (n) => labelOf(n.hotkey) || n.hotkey,
      cell: (n) =>
        html`${accountLink(n.hotkey)}${
          n.validator_permit ? html` <span class="chip chip-v" title="validator permit">V</span>` : ""
        }`,
    },
    {
      key: "stake",
      label: "Stake",
      numeric: true,
      value: (n) => Number(n.stake),
      cell: (n) => amount(n.stake, { decimals: 2 }),
    },
    fraction("incentive"),
    fraction("dividends"),
    fraction("trust"),
    fraction("consensus"),
    fraction("validator_trust"),
    {
      key: "emission",
      label: "Emission",
      numeric: true,
      title: "tokens earned in the last epoch",
      value: (n) => Number(n.emission),
      cell: (n) => amount(n.emission),
    },
    {
      key: "endpoint",
      label: "Endpoint",
      value: (n) => (n.endpoint ? `${n.endpoint.ip}:${n.endpoint.port}` : ""),
      cell: (n) => endpoint(n.endpoint),
    },
    {
      key: "last_update",
      label: "Updated",
      numeric: true,
      title: "the block of its last weights (validators) or registration",
      value: (n) => n.last_update,
      cell: (n) => {
        const head = ctx.state.status ? ctx.state.status.height : n.last_update;
        const age = Math.max(0, head - n.last_update);
        return html`${blockLink(n.last_update)} <span class="muted small">${
          age === 0 ? "now" : `${int(age)} block${age === 1 ? "" : "s"} ago`
        }</span>`;
      },
    },
  ];
}

function performancePlaceholder(gateway = { connected: false }) {
  return placeholder(
    "◔",
    gateway.connected ? "No measurements for this subnet" : "No gateway connected",
    "Latency, requests served and failures of each miner will show here; validators' own reports will join them.",
    gateway.connected ? "" : html`Start the dashboard with <code>--gateway URL</code>.`,
  );
}

// -- the view ----------------------------------------------------------------------------------

export class SubnetView {
  constructor(element, params, ctx) {
    this.ctx = ctx;
    this.netuid = Number(params.netuid);
    this.highlight = params.query.get("uid");
    this.matrix = "weights";
    this.element = element;
    this.history = null;
    setHtml(
      element,
      html`<div class="page-head">
          <div><h1>Subnet ${this.netuid}</h1><div class="page-sub" id="subnet-line">loading…</div></div>
          <div class="page-actions"><a class="button" href="#/subnets">all subnets</a></div>
        </div>
        <div class="cards" id="subnet-cards"></div>
        ${panel("Metagraph", html`<div id="metagraph-table">${empty("Loading…")}</div>`, {
          id: "metagraph-panel",
          subtitle: "click a column to sort · fixed-point figures as decimals (1.0 = all of it)",
          actions: html`<input type="search" id="metagraph-filter" placeholder="filter uid or hotkey" aria-label="filter the metagraph">`,
        })}
        <div class="grid two">
          ${panel(
            "Weights",
            html`<div class="chart" id="heatmap"><canvas></canvas></div>
              <div class="legend-scale"><span>0</span><span class="scale" style="background:${heatScaleCss()}"></span><span id="heat-max">max</span></div>
              <div id="heatmap-empty"></div>`,
            {
              id: "weights-panel",
              subtitle: "rows set weights on columns · hover a cell, click to open the miner",
              actions: html`<div class="toggle" role="group" aria-label="matrix">
                <button data-matrix="weights" class="on">weights</button><button data-matrix="bonds">bonds</button></div>`,
            },
          )}
          ${panel(
            "Emission over time",
            html`<div class="chart" id="emission-chart"><canvas></canvas></div><div id="emission-legend"></div>`,
            { id: "emission-panel", subtitle: html`<span id="emission-source">tokens per epoch and uid</span>` },
          )}
        </div>
        ${panel("Validators' measurements", html`<div id="measurements">${empty("Loading…")}</div>`, {
          id: "measurements-panel",
          subtitle: "what each validator measured when it probed the miners: latency over its last probes, throughput, score",
        })}
        ${panel("Miner performance", html`<div id="performance">${performancePlaceholder()}</div>`, {
          id: "performance-panel",
          subtitle: "latency and requests, as the gateway measures them",
        })}
        ${panel("Recent receipts", html`<div id="subnet-receipts">${empty("Loading…")}</div>`, {
          id: "subnet-receipts-panel",
          subtitle: "answers the gateway served on this subnet, each with the miner's signed receipt",
        })}
        ${panel("Hyperparameters", html`<div id="hyperparams"></div>`, { id: "hyperparams-panel" })}`,
    );
    this.table = new SortableTable(element.querySelector("#metagraph-table"), metagraphColumns(ctx), {
      sortKey: "uid",
      descending: false,
      id: "metagraph",
      rowAttrs: (n) =>
        html` data-uid="${n.uid}" data-hotkey="${n.hotkey}"${
          String(n.uid) === this.highlight ? html` class="highlight"` : ""
        }`,
    });
    element.querySelector("#metagraph-filter").addEventListener("input", () => this.renderTable());
    element.querySelector("#weights-panel .toggle").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-matrix]");
      if (!button) return;
      this.matrix = button.dataset.matrix;
      for (const b of element.querySelectorAll("#weights-panel .toggle button")) {
        b.classList.toggle("on", b === button);
      }
      this.renderMatrix();
    });
  }

  async refresh() {
    const { api, state } = this.ctx;
    let subnet;
    let metagraph;
    try {
      [subnet, metagraph] = await Promise.all([api.subnet(this.netuid), api.metagraph(this.netuid)]);
    } catch (error) {
      if (error.code === "unknown_subnet" || error.status === 404) {
        setHtml(
          this.element,
          html`<div class="page-head"><div><h1>Subnet ${this.netuid}</h1></div></div>
            ${empty(html`There is no subnet ${this.netuid} (yet). <a href="#/subnets">See all subnets</a>.`)}`,
        );
        this.gone = true;
        return;
      }
      throw error;
    }
    if (this.gone) return;
    this.subnet = subnet;
    this.metagraph = metagraph;
    const remote = await api.optional("emissions", `subnets/${this.netuid}/emissions?limit=${MAX_HISTORY}`);
    if (remote) {
      this.history = historyFromNode(remote);
      this.historySource = "node";
    } else {
      const genesis = state.status ? state.status.genesis_hash : "unknown";
      if (this.history === null || this.historySource === "node") this.history = loadHistory(genesis, this.netuid);
      this.history = recordEpoch(this.history, genesis, subnet, metagraph);
      this.historySource = "page";
    }
    this.renderHead();
    this.renderTable();
    this.renderMatrix();
    this.renderEmission();
    const [gateway, validators, receipts] = await Promise.all([
      readGateway(this.ctx),
      readValidators(this.netuid),
      readReceipts(this.ctx, { netuid: this.netuid, limit: 10 }),
    ]);
    setHtml(
      this.element.querySelector("#measurements"),
      (validators.ok && measurementsTable(validators.validators, { netuid: this.netuid })) || noMeasurements(validators),
    );
    setHtml(
      this.element.querySelector("#performance"),
      minerPerformance(gateway, this.netuid) || performancePlaceholder(gateway),
    );
    setHtml(this.element.querySelector("#subnet-receipts"), receiptsTable(receipts));
  }

  renderHead() {
    const s = this.subnet;
    const m = this.metagraph;
    const head = this.ctx.state.status ? this.ctx.state.status.height : m.block;
    const totalStake = m.neurons.reduce((sum, n) => sum + big(n.stake), 0n);
    const validators = m.neurons.filter((n) => n.validator_permit).length;
    const untilEpoch = Math.max(0, s.next_epoch_block - head);
    const period = s.tempo + 1;
    setHtml(
      this.element.querySelector("#subnet-line"),
      html`owned by ${accountLink(s.owner)} · created at ${blockLink(s.created_at)} · tempo ${s.tempo} blocks`,
    );
    setHtml(
      this.element.querySelector("#subnet-cards"),
      html`${card("Neurons", html`${m.n} <span class="muted">/ ${s.max_uids}</span>`, `${validators} with a validator permit`, {
        progress: m.n / s.max_uids,
        testid: "neuron-count",
      })}
      ${card(
        "Next epoch",
        untilEpoch === 0 ? "now" : html`in ${untilEpoch} block${untilEpoch === 1 ? "" : "s"}`,
        html`at ${blockLink(s.next_epoch_block)} · last ${s.last_epoch ? blockLink(s.last_epoch) : "none yet"}`,
        { progress: 1 - untilEpoch / period },
      )}
      ${card("Pending emission", amount(s.pending_emission), "tokens to pay at the next epoch")}
      ${card("Total stake", amount(totalStake, { decimals: 2 }), "behind the subnet's hotkeys")}
      ${card("Registration", amount(s.registration_burn), "tokens burned by the next registration")}
      ${card("Locked", amount(s.locked, { decimals: 2 }), "by the owner to create it")}`,
    );
    const hp = s.hyperparams || {};
    setHtml(
      this.element.querySelector("#hyperparams"),
      keyValues(
        Object.entries(hp).map(([k, v]) => [
          k.replace(/_/g, " "),
          html`<span class="mono">${/(burn|deposit|_stake)$/.test(k) ? `${tokens(v, { trim: true, decimals: 9 })} tokens` : String(v)}</span>`,
        ]),
      ),
    );
  }

  renderTable() {
    if (!this.metagraph) return;
    const needle = this.element.querySelector("#metagraph-filter").value.trim().toLowerCase();
    const rows = this.metagraph.neurons.filter(
      (n) =>
        !needle ||
        String(n.uid) === needle ||
        n.hotkey.includes(needle) ||
        (labelOf(n.hotkey) || "").toLowerCase().includes(needle),
    );
    this.table.update(rows);
    if (!this.metagraph.neurons.length) {
      setHtml(
        this.element.querySelector("#metagraph-table"),
        empty(html`No neurons yet: register a hotkey with <code>agora subnet register ${this.netuid}</code>.`),
      );
    }
  }

  renderMatrix() {
    const m = this.metagraph;
    if (!m) return;
    const source = this.matrix === "weights" ? m.weights : m.bonds;
    const rows = [];
    let max = 0;
    source.forEach((row, uid) => {
      if (row.length) rows.push(uid);
      const total = row.reduce((sum, [, v]) => sum + Number(v), 0);
      for (const [, v] of row) {
        const f = this.matrix === "weights" ? Number(v) / total : Number(v) / m.one;
        max = Math.max(max, f);
      }
    });
    const cols = m.neurons.map((n) => n.uid);
    const byUid = new Map(m.neurons.map((n) => [n.uid, n]));
    const lookup = source.map((row) => {
      const total = row.reduce((sum, [, v]) => sum + Number(v), 0);
      return new Map(row.map(([target, v]) => [target, { raw: v, total }]));
    });
    const canvas = this.element.querySelector("#heatmap canvas");
    const note = this.element.querySelector("#heatmap-empty");
    this.element.querySelector("#heat-max").textContent =
      this.matrix === "weights" ? `${(max * 100).toFixed(1)}% of a row` : fixed(max);
    if (!rows.length) {
      canvas.hidden = true;
      setHtml(
        note,
        empty(
          this.matrix === "weights"
            ? "No weights set yet: validators set them with agora subnet weights."
            : "No bonds yet: they form as validators' weights go through epochs.",
        ),
      );
      return;
    }
    canvas.hidden = false;
    setHtml(note, "");
    const name = (uid) => {
      const n = byUid.get(uid);
      return n ? uidName(uid, n.hotkey) : `uid ${uid}`;
    };
    heatmap(
      canvas,
      rows,
      cols,
      (r, c) => {
        const entry = lookup[r] && lookup[r].get(c);
        if (!entry) return null;
        const isWeights = this.matrix === "weights";
        const share = isWeights ? Number(entry.raw) / entry.total : Number(entry.raw) / m.one;
        const target = byUid.get(c);
        return {
          fraction: max > 0 ? share / max : 0,
          href: target ? `#/account/${target.hotkey}` : null,
          html:
            `<div class="tt-title">${name(r)} → ${name(c)}</div>` +
            (isWeights
              ? `weight ${int(entry.raw)} · ${(share * 100).toFixed(2)}% of the row`
              : `bond ${fixed(share, 6)}`),
        };
      },
      { rowLabel: (uid) => `uid ${uid}`, colLabel: (uid) => String(uid) },
    );
  }

  renderEmission() {
    const canvas = this.element.querySelector("#emission-chart canvas");
    const legend = this.element.querySelector("#emission-legend");
    const history = this.history || [];
    this.element.querySelector("#emission-source").textContent =
      this.historySource === "node"
        ? "tokens per epoch and uid, from the node's epoch history"
        : "tokens per epoch and uid, recorded by this page as epochs pass (the node keeps no history)";
    if (!history.length) {
      canvas.hidden = true;
      setHtml(
        legend,
        empty(
          this.historySource === "node"
            ? `No epoch yet: one runs every ${this.subnet.tempo + 1} blocks.`
            : `Waiting for the next epoch (every ${this.subnet.tempo + 1} blocks): the chart fills in as epochs pass while this page is open.`,
        ),
      );
      return;
    }
    canvas.hidden = false;
    const series = emissionSeries(history);
    stackedArea(
      canvas,
      history.map((p) => p.block),
      series,
      { yFormat: (v) => tokens(BigInt(Math.round(v * 1e9)), { decimals: v >= 100 ? 0 : 2 }) },
    );
    const last = history[history.length - 1];
    setHtml(
      legend,
      html`<div class="legend">${[...series].reverse().map(
        (s) =>
          html`<span class="legend-item"><span class="legend-key" style="background:${s.color}"></span>${s.name}</span>`,
      )}</div>
      <div class="muted small">${history.length} epoch${history.length === 1 ? "" : "s"} · last at ${blockLink(last.block)}</div>`,
    );
  }
}

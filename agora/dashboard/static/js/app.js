// The page: loads the config, follows the node's block stream, keeps the shared state (status,
// recent blocks, subnets) fresh, and routes #/... to a view.
//
// Live updates: each `block` event from /v1/events updates the header and the block list at
// once, then refreshes the status and the current view (at most once a second). Everything is
// also refetched every `refresh_seconds`, so the page stays right if the stream drops.

import { NodeApi, getJson } from "./api.js";
import { fillTimes, html, int, isAddress, setLabels } from "./format.js";
import { setHtml } from "./ui.js";
import { AccountView } from "./views/account.js";
import { BlockView } from "./views/block.js";
import { OverviewView } from "./views/overview.js";
import { MarketView } from "./views/market.js";
import { GatewayView } from "./views/gateway.js";
import { NotFoundView, SubnetsView } from "./views/pages.js";
import { DisputeView, ReceiptView } from "./views/records.js";
import { SubnetView } from "./views/subnet.js";

const MAX_BLOCKS = 240;
const MIN_REFRESH_MS = 1000;

const ROUTES = [
  [/^\/?$/, OverviewView, "overview"],
  [/^\/subnets\/?$/, SubnetsView, "subnets"],
  [/^\/subnet\/(?<netuid>\d+)\/?$/, SubnetView, "subnets"],
  [/^\/account\/(?<address>[^/]+)\/?$/, AccountView, ""],
  [/^\/block\/(?<height>-?\d+)\/?$/, BlockView, ""],
  [/^\/receipt\/(?<hash>[0-9a-fA-F]{64})\/?$/, ReceiptView, "gateway"],
  [/^\/dispute\/(?<id>[^/]+)\/?$/, DisputeView, ""],
  [/^\/gateway\/?$/, GatewayView, "gateway"],
  [/^\/market\/?$/, MarketView, "market"],
];

// Calls `fn` now, or as soon as the last call is `gap` ms old; never two at once.
function throttled(fn, gap) {
  let running = false;
  let again = false;
  let last = 0;
  let timer = null;
  const run = async () => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = true;
    last = Date.now();
    try {
      await fn();
    } finally {
      running = false;
      if (again) {
        again = false;
        trigger();
      }
    }
  };
  const trigger = () => {
    if (timer !== null) return;
    timer = setTimeout(run, Math.max(0, last + gap - Date.now()));
  };
  return trigger;
}

class App {
  constructor(config) {
    this.config = config;
    this.api = new NodeApi(config.node.base);
    this.state = { status: null, blocks: [], subnets: [], live: "connecting" };
    this.view = null;
    this.viewElement = document.getElementById("view");
    const gatewayApi = config.gateway ? new NodeApi(config.gateway.base) : null;
    this.ctx = { api: this.api, gatewayApi, config, state: this.state };
    this.refreshAll = throttled(() => this.refresh(), MIN_REFRESH_MS);
  }

  async start() {
    document.getElementById("node-url").textContent = this.config.node.url;
    if (this.config.gateway) {
      document.getElementById("gateway-url").textContent = ` · the gateway's at ${this.config.gateway.url}`;
    }
    document.getElementById("version").textContent = `v${this.config.version}`;
    window.addEventListener("hashchange", () => this.route());
    this.bindSearch();
    this.bindTheme();
    setInterval(() => this.tick(), 1000);
    setInterval(() => this.refreshAll(), Math.max(1, this.config.refresh_seconds) * 1000);
    await this.refreshShared();
    this.route();
    this.api.events(
      (event) => this.onBlock(event),
      (live) => this.setLive(live),
    );
  }

  // -- shared state -----------------------------------------------------------------------------

  async refreshShared() {
    try {
      const [status, subnets] = await Promise.all([this.api.status(), this.api.subnets()]);
      this.state.status = status;
      this.state.subnets = subnets.subnets;
      setLabels(this.config.labels, status.chain_id === "agora-dev");
      await this.loadBlocks();
      this.showProblem(null);
    } catch (error) {
      this.showProblem(error);
    }
    this.renderHeader();
  }

  // Fetches whatever the window of recent blocks misses (at start, or a block the stream
  // skipped while reconnecting), oldest first.
  async loadBlocks() {
    const head = this.state.status.height;
    const have = new Set(this.state.blocks.map((b) => b.height));
    let start = Math.max(1, head - MAX_BLOCKS + 1);
    while (start <= head && have.has(start)) start += 1;
    const fetched = [];
    while (start <= head) {
      const page = await this.api.blocksFrom(start, Math.min(100, head - start + 1));
      if (!page.blocks.length) break;
      fetched.push(...page.blocks);
      start = page.blocks[page.blocks.length - 1].height + 1;
      while (start <= head && have.has(start)) start += 1;
    }
    this.mergeBlocks(fetched);
  }

  mergeBlocks(incoming) {
    const byHeight = new Map(this.state.blocks.map((b) => [b.height, b]));
    for (const b of incoming) if (!byHeight.has(b.height)) byHeight.set(b.height, b);
    this.state.blocks = [...byHeight.values()].sort((a, b) => a.height - b.height).slice(-MAX_BLOCKS);
  }

  onBlock(event) {
    event.arrived = Date.now();
    this.mergeBlocks([event]);
    const status = this.state.status;
    if (status && event.height > status.height) {
      status.height = event.height;
      status.head_hash = event.hash;
      status.head_timestamp = event.timestamp;
    }
    this.renderHeader(true);
    if (this.view && this.view.onBlock) this.view.onBlock(event);
    this.refreshAll();
  }

  async refresh() {
    await this.refreshShared();
    await this.refreshView();
  }

  async refreshView() {
    const view = this.view;
    if (!view) return;
    try {
      await view.refresh();
    } catch (error) {
      if (view === this.view) this.showProblem(error);
    }
  }

  // -- header, banner, clocks -------------------------------------------------------------------

  renderHeader(pulse = false) {
    const status = this.state.status;
    const height = document.getElementById("height");
    if (status) {
      height.textContent = int(status.height);
      document.getElementById("chain-id").textContent = status.chain_id;
      document.title = `#${int(status.height)} · Agora`;
      for (const element of document.querySelectorAll("[data-live-height]")) {
        element.textContent = int(status.height);
      }
    }
    if (pulse) {
      height.classList.remove("pulse");
      void height.offsetWidth; // restart the animation
      height.classList.add("pulse");
    }
  }

  setLive(live) {
    this.state.live = live;
    const dot = document.getElementById("live");
    dot.dataset.state = live;
    dot.title = live === "live" ? "following new blocks" : "reconnecting to the block stream…";
    document.getElementById("live-text").textContent = live === "live" ? "live" : "reconnecting";
  }

  showProblem(error) {
    const banner = document.getElementById("banner");
    if (!error) {
      banner.hidden = true;
      return;
    }
    banner.hidden = false;
    const where = this.config.node.url;
    setHtml(
      banner,
      error.status === 502 || error.code === "unreachable"
        ? html`<b>The node at ${where} does not answer.</b> The page keeps retrying; start it with
            <code>agora node start --dev</code> or <code>agora up</code>.`
        : html`<b>${error.code || "error"}:</b> ${error.message}`,
    );
  }

  tick() {
    fillTimes(document);
  }

  // -- routing ----------------------------------------------------------------------------------

  route() {
    const hash = window.location.hash.replace(/^#/, "") || "/";
    const [path, search] = hash.split("?");
    let match = null;
    let View = NotFoundView;
    let nav = "";
    for (const [pattern, candidate, section] of ROUTES) {
      match = pattern.exec(path);
      if (match) {
        View = candidate;
        nav = section;
        break;
      }
    }
    for (const link of document.querySelectorAll("nav.main a")) {
      link.classList.toggle("active", link.dataset.nav === nav);
    }
    if (this.view && this.view.destroy) this.view.destroy();
    const params = { ...((match && match.groups) || {}), query: new URLSearchParams(search || "") };
    this.viewElement.scrollTop = 0;
    window.scrollTo(0, 0);
    this.view = new View(this.viewElement, params, this.ctx);
    this.viewElement.dataset.view = View.name;
    this.refreshView();
  }

  bindSearch() {
    const form = document.getElementById("search");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const input = form.querySelector("input");
      const text = input.value.trim().toLowerCase().replace(/^#/, "");
      let target = null;
      if (isAddress(text)) target = `#/account/${text}`;
      else if (/^\d+$/.test(text)) target = `#/block/${text}`;
      else if (/^(sn|subnet\s*)\d+$/.test(text)) target = `#/subnet/${text.match(/\d+/)[0]}`;
      else {
        const label = Object.entries(this.config.labels || {}).find(([, name]) => name === text);
        if (label) target = `#/account/${label[0]}`;
      }
      if (target) {
        window.location.hash = target;
        input.value = "";
        input.blur();
      } else {
        form.classList.remove("shake");
        void form.offsetWidth;
        form.classList.add("shake");
      }
    });
  }

  bindTheme() {
    const root = document.documentElement;
    const saved = localStorage.getItem("agora.theme");
    if (saved) root.dataset.theme = saved;
    document.getElementById("theme").addEventListener("click", () => {
      root.dataset.theme = root.dataset.theme === "light" ? "dark" : "light";
      localStorage.setItem("agora.theme", root.dataset.theme);
      if (this.view) this.refreshView(); // canvases pick up the new colours
    });
  }
}

async function main() {
  let config;
  try {
    config = await getJson("config.json");
  } catch (error) {
    document.getElementById("banner").hidden = false;
    document.getElementById("banner").textContent = `cannot load the dashboard's config: ${error.message}`;
    return;
  }
  const app = new App(config);
  window.agoraDashboard = app; // for the curious, in the browser console
  await app.start();
}

main();

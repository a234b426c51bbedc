// Reading the node's public API through the dashboard's proxy (same origin: /node/v1/...).
//
// Integers above 2^53 in the JSON become BigInt (JSON.parse source text access), so amounts stay
// exact. Blocks never change once made, so block bodies are cached.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function reviver(key, value, context) {
  if (
    typeof value === "number" &&
    Number.isInteger(value) &&
    !Number.isSafeInteger(value) &&
    context &&
    typeof context.source === "string" &&
    /^-?\d+$/.test(context.source)
  ) {
    return BigInt(context.source);
  }
  return value;
}

export function parseJson(text) {
  return JSON.parse(text, reviver);
}

export async function getJson(url) {
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, "unreachable", `the dashboard server does not answer (${error})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = parseJson(text);
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiError(
      response.status,
      error.code || `http_${response.status}`,
      error.message || text.slice(0, 200),
    );
  }
  if (data === null) throw new ApiError(response.status, "bad_response", "not JSON");
  return data;
}

// A 404 that says the route does not exist (the node's "not_found", the gateway's
// "unknown_url"), as opposed to "no such block/receipt/dispute".
export function isMissingRoute(error) {
  return error.status === 404 && ["not_found", "unknown_url"].includes(error.code);
}

const MAX_CACHED_BLOCKS = 1000;
const ABSENT_RECHECK_MS = 60_000;

export class NodeApi {
  constructor(base) {
    this.base = base.replace(/\/$/, "");
    this.blockCache = new Map();
    this.absent = new Map();
  }

  get(path) {
    return getJson(`${this.base}/v1/${path}`);
  }

  // A route that older nodes lack (the market's, payment channels): null when the node has no
  // such route, remembered for a minute under `feature` so that it costs one 404 a minute.
  async optional(feature, path) {
    const since = this.absent.get(feature);
    if (since !== undefined && Date.now() - since < ABSENT_RECHECK_MS) return null;
    try {
      const data = await this.get(path);
      this.absent.delete(feature);
      return data;
    } catch (error) {
      if (!isMissingRoute(error)) throw error;
      this.absent.set(feature, Date.now());
      return null;
    }
  }

  status() {
    return this.get("status");
  }

  recentBlocks(limit = 20) {
    return this.get(`blocks?limit=${limit}`);
  }

  blocksFrom(start, limit) {
    return this.get(`blocks?start=${start}&limit=${limit}`);
  }

  async block(height) {
    const cached = this.blockCache.get(height);
    if (cached) return cached;
    const block = await this.get(`blocks/${height}`);
    this.blockCache.set(height, block);
    if (this.blockCache.size > MAX_CACHED_BLOCKS) {
      this.blockCache.delete(this.blockCache.keys().next().value);
    }
    return block;
  }

  account(address) {
    return this.get(`accounts/${address}`);
  }

  subnets() {
    return this.get("subnets");
  }

  subnet(netuid) {
    return this.get(`subnets/${netuid}`);
  }

  metagraph(netuid) {
    return this.get(`subnets/${netuid}/metagraph`);
  }

  // Bodies of the most recent non-empty blocks among `summaries` (newest first), at most `max`.
  async recentTransactions(summaries, max = 20, maxBlocks = 30) {
    const withTxs = summaries.filter((s) => s.tx_count > 0).sort((a, b) => b.height - a.height);
    const picked = withTxs.slice(0, maxBlocks);
    const blocks = await Promise.all(picked.map((s) => this.block(s.height)));
    const txs = [];
    for (const block of blocks) {
      block.txs.forEach((tx, index) => {
        txs.push({ ...tx, height: block.header.height, index, timestamp: block.header.timestamp });
      });
      if (txs.length >= max) break;
    }
    return txs
      .sort((a, b) => b.height - a.height || b.index - a.index)
      .slice(0, max);
  }

  // The node's block stream. `onBlock(event)` for each new block; `onState("live"|"retrying")`.
  // EventSource reconnects by itself when a stream ends, but gives up for good when an attempt
  // gets an error answer (the dashboard's 502 while the node is down): then we start over, with
  // a growing pause. Blocks missed meanwhile are fetched by the next refresh.
  events(onBlock, onState) {
    const url = `${this.base}/v1/events`;
    let pause = 1000;
    const connect = () => {
      const source = new EventSource(url);
      source.addEventListener("open", () => {
        pause = 1000;
        onState("live");
      });
      source.addEventListener("error", () => {
        onState("retrying");
        if (source.readyState === EventSource.CLOSED) {
          setTimeout(connect, pause);
          pause = Math.min(pause * 2, 15000);
        }
      });
      source.addEventListener("block", (message) => {
        try {
          onBlock(parseJson(message.data));
        } catch (error) {
          console.warn("bad block event", error);
        }
      });
    };
    connect();
  }
}

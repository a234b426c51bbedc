// Canvas charts with no library: bars, stacked areas and a heat map, each with a tooltip.
//
// Every chart keeps its drawing function on the canvas, so a resize redraws it at the new width
// and at the screen's pixel ratio, and its hit test, so hovering shows what is under the pointer.

import { escapeHtml } from "./format.js";

export const PALETTE = [
  "#7c9cff",
  "#34d399",
  "#fbbf24",
  "#f472b6",
  "#38bdf8",
  "#a78bfa",
  "#fb923c",
  "#4ade80",
  "#f87171",
  "#2dd4bf",
];
export const OTHERS_COLOR = "#64748b";

function cssVar(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

function theme() {
  return {
    text: cssVar("--muted", "#8b95a7"),
    grid: cssVar("--grid", "rgba(148,163,184,0.12)"),
    panel: cssVar("--panel", "#121826"),
    accent: cssVar("--accent", "#7c9cff"),
    empty: cssVar("--cell-empty", "rgba(148,163,184,0.06)"),
    font: `11px ${cssVar("--font-ui", "system-ui, sans-serif")}`,
  };
}

// -- plumbing: size, redraw on resize, tooltip ------------------------------------------------

const observed = new WeakSet();
const resizer = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const canvas = entry.target.querySelector(":scope > canvas");
    if (canvas && canvas._draw && canvas.isConnected) canvas._draw();
  }
});

function prepare(canvas, height) {
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(50, canvas.parentElement.clientWidth);
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

function install(canvas, draw) {
  canvas._draw = draw;
  draw();
  if (!observed.has(canvas)) {
    observed.add(canvas);
    resizer.observe(canvas.parentElement);
    canvas.addEventListener("mousemove", (event) => {
      const rect = canvas.getBoundingClientRect();
      const hit = canvas._hit && canvas._hit(event.clientX - rect.left, event.clientY - rect.top);
      canvas.style.cursor = hit && hit.href ? "pointer" : "default";
      if (hit) showTooltip(event.clientX, event.clientY, hit.html);
      else hideTooltip();
      if (canvas._hover) canvas._hover(hit);
    });
    canvas.addEventListener("mouseleave", () => {
      hideTooltip();
      if (canvas._hover) canvas._hover(null);
    });
    canvas.addEventListener("click", (event) => {
      const rect = canvas.getBoundingClientRect();
      const hit = canvas._hit && canvas._hit(event.clientX - rect.left, event.clientY - rect.top);
      if (hit && hit.href) window.location.hash = hit.href;
    });
  }
}

function tooltip() {
  let element = document.getElementById("tooltip");
  if (!element) {
    element = document.createElement("div");
    element.id = "tooltip";
    element.setAttribute("role", "tooltip");
    document.body.appendChild(element);
  }
  return element;
}

export function showTooltip(x, y, content) {
  const element = tooltip();
  element.innerHTML = String(content);
  element.hidden = false;
  const pad = 14;
  const box = element.getBoundingClientRect();
  const left = x + pad + box.width > window.innerWidth ? x - pad - box.width : x + pad;
  const top = y + pad + box.height > window.innerHeight ? y - pad - box.height : y + pad;
  element.style.left = `${Math.max(4, left)}px`;
  element.style.top = `${Math.max(4, top)}px`;
}

export function hideTooltip() {
  const element = document.getElementById("tooltip");
  if (element) element.hidden = true;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

// -- bars: one value per x (transactions per block) -------------------------------------------

// items: [{value, label, html, href}], oldest first.
export function barChart(canvas, items, { height = 90, color } = {}) {
  let hovered = -1;
  const draw = () => {
    const t = theme();
    const { ctx, width } = prepare(canvas, height);
    const top = 14;
    const bottom = height - 4;
    const max = niceMax(Math.max(1, ...items.map((item) => item.value)));
    const slot = width / Math.max(items.length, 1);
    ctx.font = t.font;
    ctx.fillStyle = t.text;
    ctx.fillText(`max ${max}`, 2, 10);
    ctx.strokeStyle = t.grid;
    ctx.beginPath();
    ctx.moveTo(0, bottom + 0.5);
    ctx.lineTo(width, bottom + 0.5);
    ctx.stroke();
    items.forEach((item, i) => {
      const h = item.value > 0 ? Math.max(2, ((bottom - top) * item.value) / max) : 1;
      ctx.globalAlpha = i === hovered ? 1 : item.value > 0 ? 0.8 : 0.35;
      ctx.fillStyle = item.value > 0 ? color || t.accent : t.text;
      ctx.fillRect(i * slot + 1, bottom - h, Math.max(1, slot - 2), h);
    });
    ctx.globalAlpha = 1;
  };
  canvas._hit = (x) => {
    const slot = canvas.clientWidth / Math.max(items.length, 1);
    const i = Math.floor(x / slot);
    return items[i] ? { ...items[i], index: i } : null;
  };
  canvas._hover = (hit) => {
    const next = hit ? hit.index : -1;
    if (next !== hovered) {
      hovered = next;
      draw();
    }
  };
  install(canvas, draw);
}

// -- stacked areas: emission per uid over epochs ----------------------------------------------

// xs: [block ...]; series: [{name, color, values: [number per x], href}]
export function stackedArea(
  canvas,
  xs,
  series,
  {
    height = 220,
    yFormat = String,
    xFormat = (x) => `#${x}`,
    title = (x) => `epoch at block #${x}`,
  } = {},
) {
  let hoverIndex = -1;
  const left = 64;
  const right = 12;
  const top = 10;
  const bottom = 22;
  const totals = xs.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const xAt = (i, width) =>
    xs.length === 1 ? (left + width - right) / 2 : left + ((width - left - right) * i) / (xs.length - 1);

  const draw = () => {
    const t = theme();
    const { ctx, width } = prepare(canvas, height);
    const plotBottom = height - bottom;
    const max = 4 * niceMax(Math.max(...totals, 0) / 4); // four gridlines at round values
    const yAt = (v) => plotBottom - ((plotBottom - top) * v) / max;
    ctx.font = t.font;
    ctx.textBaseline = "middle";
    for (let k = 0; k <= 4; k += 1) {
      const v = (max * k) / 4;
      const y = Math.round(yAt(v)) + 0.5;
      ctx.strokeStyle = t.grid;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(width - right, y);
      ctx.stroke();
      ctx.fillStyle = t.text;
      ctx.textAlign = "right";
      ctx.fillText(yFormat(v), left - 8, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "alphabetic";
    const labelWidth = Math.max(60, ctx.measureText(xFormat(xs[xs.length - 1] ?? 0)).width + 24);
    const labelEvery = Math.max(1, Math.ceil(xs.length / Math.max(2, (width - left) / labelWidth)));
    xs.forEach((x, i) => {
      const last = i === xs.length - 1;
      if ((i % labelEvery === 0 && xs.length - 1 - i >= labelEvery / 2) || last) {
        const at = xAt(i, width);
        ctx.fillStyle = t.text;
        ctx.textAlign = xs.length > 1 && last ? "right" : i === 0 && xs.length > 1 ? "left" : "center";
        ctx.fillText(xFormat(x), last && xs.length > 1 ? Math.min(at + 4, width) : at, height - 6);
      }
    });
    const base = xs.map(() => 0);
    for (const s of series) {
      const upper = xs.map((_, i) => base[i] + (s.values[i] || 0));
      ctx.fillStyle = s.color;
      ctx.strokeStyle = s.color;
      if (xs.length === 1) {
        const x = xAt(0, width);
        ctx.globalAlpha = 0.75;
        ctx.fillRect(x - 14, yAt(upper[0]), 28, yAt(base[0]) - yAt(upper[0]));
      } else {
        ctx.globalAlpha = 0.55;
        ctx.beginPath();
        xs.forEach((_, i) => ctx.lineTo(xAt(i, width), yAt(upper[i])));
        for (let i = xs.length - 1; i >= 0; i -= 1) ctx.lineTo(xAt(i, width), yAt(base[i]));
        ctx.closePath();
        ctx.fill();
        ctx.globalAlpha = 1;
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        xs.forEach((_, i) => ctx.lineTo(xAt(i, width), yAt(upper[i])));
        ctx.stroke();
      }
      ctx.globalAlpha = 1;
      upper.forEach((v, i) => {
        base[i] = v;
      });
    }
    if (hoverIndex >= 0 && xs.length > 1) {
      const x = Math.round(xAt(hoverIndex, width)) + 0.5;
      ctx.strokeStyle = t.text;
      ctx.setLineDash([3, 3]);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, plotBottom);
      ctx.stroke();
      ctx.setLineDash([]);
    }
  };

  canvas._hit = (x) => {
    if (!xs.length) return null;
    const width = canvas.clientWidth;
    let best = 0;
    xs.forEach((_, i) => {
      if (Math.abs(xAt(i, width) - x) < Math.abs(xAt(best, width) - x)) best = i;
    });
    const rows = series
      .map((s) => ({ s, v: s.values[best] || 0 }))
      .filter((row) => row.v > 0)
      .reverse()
      .map(
        (row) =>
          `<div class="tt-row"><span class="tt-key" style="background:${row.s.color}"></span>` +
          `${escapeHtml(row.s.name)}<b>${escapeHtml(yFormat(row.v))}</b></div>`,
      )
      .join("");
    return {
      index: best,
      html:
        `<div class="tt-title">${escapeHtml(title(xs[best]))}</div>${rows}` +
        `<div class="tt-row tt-total">total<b>${escapeHtml(yFormat(totals[best]))}</b></div>`,
    };
  };
  canvas._hover = (hit) => {
    const next = hit ? hit.index : -1;
    if (next !== hoverIndex) {
      hoverIndex = next;
      draw();
    }
  };
  install(canvas, draw);
}

// -- heat map: the weight (or bond) matrix ----------------------------------------------------

// A sequential scale for a dark or light panel: deep blue -> violet -> amber.
const STOPS = [
  [0.0, [37, 52, 110]],
  [0.35, [99, 102, 241]],
  [0.7, [236, 72, 153]],
  [1.0, [251, 191, 36]],
];

export function heatColor(fraction) {
  const f = Math.min(1, Math.max(0, fraction));
  for (let i = 1; i < STOPS.length; i += 1) {
    const [p1, c1] = STOPS[i];
    const [p0, c0] = STOPS[i - 1];
    if (f <= p1) {
      const k = (f - p0) / (p1 - p0);
      const c = c0.map((v, j) => Math.round(v + (c1[j] - v) * k));
      return `rgb(${c[0]},${c[1]},${c[2]})`;
    }
  }
  return "rgb(251,191,36)";
}

export function heatScaleCss() {
  return `linear-gradient(90deg, ${STOPS.map(([p]) => `${heatColor(p)} ${p * 100}%`).join(", ")})`;
}

// rows, cols: uids; cell(r, c) -> {fraction, html, href} or null for an empty cell.
export function heatmap(canvas, rows, cols, cell, { rowLabel = String, colLabel = String } = {}) {
  let hovered = null;
  const geometry = () => {
    const width = canvas.parentElement.clientWidth;
    const left = 56;
    const top = 26;
    const size = Math.max(4, Math.min(72, Math.floor((width - left - 8) / Math.max(cols.length, 1))));
    return { width, left, top, size, height: top + size * rows.length + 6 };
  };
  const draw = () => {
    const t = theme();
    const g = geometry();
    const { ctx } = prepare(canvas, g.height);
    ctx.font = t.font;
    ctx.textBaseline = "middle";
    const every = Math.max(1, Math.ceil(22 / g.size));
    ctx.textAlign = "center";
    cols.forEach((c, j) => {
      if (j % every === 0) {
        ctx.fillStyle = hovered && hovered.j === j ? t.accent : t.text;
        ctx.fillText(colLabel(c), g.left + j * g.size + g.size / 2, g.top - 10);
      }
    });
    ctx.textAlign = "right";
    const rowEvery = Math.max(1, Math.ceil(14 / g.size));
    rows.forEach((r, i) => {
      if (i % rowEvery === 0) {
        ctx.fillStyle = hovered && hovered.i === i ? t.accent : t.text;
        ctx.fillText(rowLabel(r), g.left - 8, g.top + i * g.size + g.size / 2);
      }
      cols.forEach((c, j) => {
        const value = cell(r, c);
        ctx.fillStyle = value ? heatColor(value.fraction) : t.empty;
        const gap = g.size > 8 ? 1 : 0;
        ctx.fillRect(g.left + j * g.size + gap, g.top + i * g.size + gap, g.size - 2 * gap, g.size - 2 * gap);
      });
    });
    if (hovered) {
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 1.5;
      ctx.strokeRect(g.left + hovered.j * g.size + 0.75, g.top + hovered.i * g.size + 0.75, g.size - 1.5, g.size - 1.5);
    }
  };
  canvas._hit = (x, y) => {
    const g = geometry();
    const j = Math.floor((x - g.left) / g.size);
    const i = Math.floor((y - g.top) / g.size);
    if (i < 0 || j < 0 || i >= rows.length || j >= cols.length) return null;
    const value = cell(rows[i], cols[j]);
    const html = value
      ? value.html
      : `<div class="tt-title">${escapeHtml(rowLabel(rows[i]))} → ${escapeHtml(colLabel(cols[j]))}</div>no weight`;
    return { i, j, html, href: value ? value.href : null };
  };
  canvas._hover = (hit) => {
    const next = hit ? { i: hit.i, j: hit.j } : null;
    if (JSON.stringify(next) !== JSON.stringify(hovered)) {
      hovered = next;
      draw();
    }
  };
  install(canvas, draw);
}

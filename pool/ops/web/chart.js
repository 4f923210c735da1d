/* Hashrate charts as hand-drawn SVG: no library, no network, no inline script (the page's CSP forbids it).
 * Every label is set with textContent, so nothing from the data is ever parsed as markup. */
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const UNITS = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s", "ZH/s"];

  function formatHashrate(value) {
    if (!isFinite(value) || value <= 0) return "0 H/s";
    let i = 0;
    while (value >= 1000 && i < UNITS.length - 1) { value /= 1000; i += 1; }
    return (value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2)) + " " + UNITS[i];
  }

  function niceCeiling(value) {
    if (!(value > 0)) return 1;
    const magnitude = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
      if (m * magnitude >= value) return m * magnitude;
    }
    return 10 * magnitude;
  }

  function node(name, attrs, parent) {
    const el = document.createElementNS(SVG, name);
    for (const key of Object.keys(attrs || {})) el.setAttribute(key, String(attrs[key]));
    if (parent) parent.appendChild(el);
    return el;
  }

  function timeLabel(seconds, span) {
    const d = new Date(seconds * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    const hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
    if (span <= 2 * 86400) return hm;
    return (d.getMonth() + 1) + "/" + d.getDate() + (span <= 8 * 86400 ? " " + hm : "");
  }

  /* Draw {points: [[start, hashes_per_second, shares], ...], span, step} into container (replacing it). */
  function render(container, data) {
    const points = Array.isArray(data.points) ? data.points : [];
    const width = Math.max(320, Math.round(container.clientWidth || 800));
    const height = 240;
    const m = { left: 78, right: 12, top: 12, bottom: 26 };
    const w = width - m.left - m.right;
    const h = height - m.top - m.bottom;
    const svg = node("svg", { viewBox: "0 0 " + width + " " + height, width: width, height: height,
                              class: "chart-svg", role: "img" });
    const title = node("title", {}, svg);
    title.textContent = "Hashrate over " + Math.round((data.span || 0) / 3600) + " h, one point per " +
      Math.round((data.step || 0) / 60) + " min";
    const t0 = points.length ? points[0][0] : 0;
    const t1 = points.length ? points[points.length - 1][0] + (data.step || 60) : 1;
    const maxRate = niceCeiling(Math.max(0, ...points.map((p) => p[1])));
    const x = (t) => m.left + ((t - t0) / Math.max(1, t1 - t0)) * w;
    const y = (r) => m.top + h - (r / maxRate) * h;

    const grid = node("g", { class: "grid" }, svg);
    for (let i = 0; i <= 4; i += 1) {
      const value = (maxRate * i) / 4;
      node("line", { x1: m.left, x2: m.left + w, y1: y(value), y2: y(value) }, grid);
      const label = node("text", { x: m.left - 6, y: y(value) + 4, "text-anchor": "end", class: "axis" }, grid);
      label.textContent = formatHashrate(value);
    }
    const ticks = 6;
    for (let i = 0; i <= ticks; i += 1) {
      const t = t0 + ((t1 - t0) * i) / ticks;
      const label = node("text", { x: x(t), y: height - 8, "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle",
                                   class: "axis" }, grid);
      label.textContent = timeLabel(t, data.span || 0);
    }

    if (points.length) {
      const mid = (p) => x(p[0] + (data.step || 60) / 2);
      const line = points.map((p, i) => (i ? "L" : "M") + mid(p).toFixed(1) + " " + y(p[1]).toFixed(1)).join(" ");
      const area = line + " L" + mid(points[points.length - 1]).toFixed(1) + " " + y(0) +
        " L" + mid(points[0]).toFixed(1) + " " + y(0) + " Z";
      node("path", { d: area, class: "area" }, svg);
      node("path", { d: line, class: "line" }, svg);
      const dots = node("g", { class: "points" }, svg);
      for (const p of points) {
        if (!(p[2] > 0)) continue;
        const dot = node("circle", { cx: mid(p).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.5, class: "point" }, dots);
        const tip = node("title", {}, dot);
        tip.textContent = new Date(p[0] * 1000).toLocaleString() + ": " + formatHashrate(p[1]) + ", " + p[2] + " shares";
      }
    }
    if (!points.some((p) => p[2] > 0)) {
      const empty = node("text", { x: m.left + w / 2, y: m.top + h / 2, "text-anchor": "middle", class: "no-data" }, svg);
      empty.textContent = "No accepted shares in this period";
    }
    container.replaceChildren(svg);
  }

  window.PoolChart = { render: render, formatHashrate: formatHashrate };
})();

/* The dashboard pages: fetch the pool's JSON API and build the page from it with DOM text nodes only.
 * Worker names are chosen by miners and the address comes from the URL: both are only ever set as text. */
"use strict";

(function () {
  const REFRESH_MS = 30000;
  const SPANS = ["1h", "24h", "7d", "30d", "90d"];
  const chartSpans = {};

  const $ = (id) => document.getElementById(id);
  const setText = (id, value) => { const el = $(id); if (el) el.textContent = value; };

  function fmtNumber(value) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    const units = ["", "k", "M", "G", "T", "P", "E"];
    let i = 0;
    let v = Number(value);
    if (v !== 0 && Math.abs(v) < 0.01) return v.toExponential(2);  // regtest and test difficulties
    while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
    const digits = Math.abs(v) >= 100 || (i === 0 && Number.isInteger(v)) ? 0 : Math.abs(v) >= 10 ? 1 : 2;
    return v.toFixed(digits) + (units[i] ? " " + units[i] : "");
  }

  function fmtBtc(sats) {
    if (sats === null || sats === undefined || !isFinite(sats)) return "–";
    return (Number(sats) / 1e8).toFixed(8) + " BTC";
  }

  function fmtTime(seconds) {
    if (!seconds) return "–";
    return new Date(seconds * 1000).toLocaleString();
  }

  function fmtAgo(seconds) {
    if (!seconds) return "never";
    const age = Math.max(0, Date.now() / 1000 - seconds);
    if (age < 90) return Math.round(age) + " s ago";
    if (age < 5400) return Math.round(age / 60) + " min ago";
    if (age < 172800) return Math.round(age / 3600) + " h ago";
    return Math.round(age / 86400) + " d ago";
  }

  function shortHash(hash) {
    const text = String(hash || "");
    return text.length > 20 ? text.slice(0, 10) + "…" + text.slice(-8) : text;
  }

  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    return { status: response.status, body: body };
  }

  /* A table row from cells: each cell is a string (set as text) or a DOM node. */
  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === undefined || cell === null ? "–" : String(cell);
      tr.appendChild(td);
    }
    return tr;
  }

  function fillTable(tableId, emptyId, rows) {
    const body = $(tableId).querySelector("tbody");
    body.replaceChildren(...rows);
    $(tableId).hidden = rows.length === 0;
    $(emptyId).hidden = rows.length !== 0;
  }

  function addressLink(address, label) {
    const a = document.createElement("a");
    a.href = "/address/" + encodeURIComponent(address);
    a.textContent = label === undefined ? address : label;
    a.className = "mono";
    return a;
  }

  function touch() { setText("updated", "Updated " + new Date().toLocaleTimeString()); }

  // ---- charts ---------------------------------------------------------------------------------------------

  async function loadChart(id) {
    const container = $(id);
    if (!container || !container.dataset.source) return;
    const span = chartSpans[id] || "24h";
    const result = await getJson(container.dataset.source + "?span=" + encodeURIComponent(span));
    if (result.status === 200 && result.body) {
      window.PoolChart.render(container, result.body);
      container.dataset.loaded = span;
    } else {
      container.textContent = "History unavailable" + (result.body && result.body.error ? ": " + result.body.error : "");
    }
  }

  function spanButtons() {
    for (const holder of document.querySelectorAll(".spans[data-chart]")) {
      const id = holder.dataset.chart;
      chartSpans[id] = chartSpans[id] || "24h";
      for (const span of SPANS) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = span;
        button.dataset.span = span;
        if (span === chartSpans[id]) button.classList.add("active");
        button.addEventListener("click", () => {
          chartSpans[id] = span;
          for (const b of holder.querySelectorAll("button")) b.classList.toggle("active", b === button);
          loadChart(id);
        });
        holder.appendChild(button);
      }
    }
  }

  // ---- pages ----------------------------------------------------------------------------------------------

  async function overview() {
    const [pool, blocks] = await Promise.all([getJson("/api/pool"), getJson("/api/blocks?limit=10"), loadChart("pool-chart")]);
    const p = pool.body || {};
    setText("pool-hashrate", window.PoolChart.formatHashrate(p.hashrate));
    setText("pool-miners", fmtNumber(p.miners));
    setText("pool-workers", fmtNumber(p.workers));
    setText("pool-height", p.height === null || p.height === undefined ? "–" : String(p.height));
    setText("pool-netdiff", fmtNumber(p.network_difficulty));
    setText("pool-blocks", fmtNumber(p.blocks_found));
    const best = p.best_share && typeof p.best_share === "object" ? p.best_share : null;  // the best-share feature
    $("pool-best-card").hidden = best === null;
    if (best) {
      const record = (r) => (r && typeof r === "object" ? r : null);
      const round = record(best.round);
      const ever = record(best.all_time);
      setText("pool-best", fmtBest(round && round.difficulty) + " / " + fmtBest(ever && ever.difficulty));
      const by = $("pool-best-by");
      by.replaceChildren();
      if (ever && ever.address) {
        by.appendChild(document.createTextNode("all time: "));
        by.appendChild(addressLink(ever.address, shortHash(ever.address)));
        if (ever.worker) by.appendChild(document.createTextNode("." + ever.worker));
      }
    }
    const list = (blocks.body && blocks.body.blocks) || [];
    fillTable("blocks-table", "blocks-empty", list.map((b) => {
      const hash = document.createElement("span");
      hash.className = "mono";
      hash.title = String(b.hash || "");
      hash.textContent = shortHash(b.hash);
      const finder = document.createElement("span");
      finder.appendChild(addressLink(b.address, shortHash(b.address)));
      if (b.worker) finder.appendChild(document.createTextNode("." + b.worker));
      return row([String(b.height), hash, finder, fmtBtc(b.reward), String(b.status), fmtAgo(b.found_at)]);
    }));
  }

  function pageAddress() {
    const prefix = "/address/";
    const path = window.location.pathname;
    try { return decodeURIComponent(path.slice(prefix.length)); } catch (err) { return path.slice(prefix.length); }
  }

  function fmtBest(value) { return value ? fmtNumber(value) : "–"; }

  async function address() {
    const addr = pageAddress();
    setText("address-title", addr);
    const search = $("search-address");
    if (search && !search.value) search.value = addr;
    document.title = addr + " · " + document.title.split(" · ").pop();
    const chart = $("address-chart");
    chart.dataset.source = "/api/history/address/" + encodeURIComponent(addr);
    const enc = encodeURIComponent(addr);
    const [info, payments] = await Promise.all([getJson("/api/address/" + enc), getJson("/api/address/" + enc + "/payments"),
                                                loadChart("address-chart")]);
    const a = info.body || {};
    $("address-unknown").hidden = a.known !== false;
    const balance = a.balance || {};
    setText("address-hashrate", window.PoolChart.formatHashrate(a.hashrate || 0));
    const workers = Array.isArray(a.workers) ? a.workers : [];
    setText("address-workers", String(workers.filter((w) => w.last_share && Date.now() / 1000 - w.last_share < 600).length));
    setText("balance-pending", fmtBtc(balance.pending_sats));
    setText("balance-payable", fmtBtc(balance.payable_sats));
    setText("balance-paid", fmtBtc(balance.paid_sats));
    setText("balance-coinbase", fmtBtc(balance.paid_in_coinbase_sats));
    fillTable("workers-table", "workers-empty", workers.map((w) => row([
      w.worker === "" ? "(default)" : w.worker, window.PoolChart.formatHashrate(w.hashrate), fmtNumber(w.accepted),
      fmtNumber(w.rejected), fmtAgo(w.last_share)])));
    // Best shares per worker come with the best-share feature; without it their columns and card stay hidden.
    const hasBest = Array.isArray(a.best_shares);
    const bests = new Map((hasBest ? a.best_shares : []).map((b) => [b.worker, b]));
    const shares = Array.isArray(a.shares) ? a.shares : [];
    const names = shares.map((s) => s.worker);
    for (const b of bests.values()) if (!names.includes(b.worker)) names.push(b.worker);
    const byWorker = new Map(shares.map((s) => [s.worker, s]));
    fillTable("shares-table", "shares-empty", names.map((name) => {
      const s = byWorker.get(name) || {};
      const b = bests.get(name) || {};
      const tr = row([name === "" ? "(default)" : name, fmtNumber(s.count ?? 0), fmtNumber(s.difficulty ?? 0),
                      fmtBest(b.round_best), fmtBest(b.best)]);
      tr.cells[3].className = tr.cells[4].className = "best";
      return tr;
    }));
    $("shares-table").classList.toggle("no-best", !hasBest);
    $("address-best-card").hidden = !(a.best_share && typeof a.best_share === "object");
    if (a.best_share) setText("address-best", fmtBest(a.best_share.round) + " / " + fmtBest(a.best_share.all_time));
    const paid = (payments.body && payments.body.payments) || [];
    fillTable("payments-table", "payments-empty", paid.map((p) => {
      const tx = document.createElement("span");
      tx.className = "mono";
      tx.title = String(p.txid || "");
      tx.textContent = p.txid ? shortHash(p.txid) : "–";
      return row([fmtTime(p.created_at), fmtBtc(p.amount), String(p.status), tx]);
    }));
  }

  function fmtWhen(value) {
    if (value === undefined || value === null || value === "") return "–";
    if (typeof value === "number") return fmtTime(value);
    const parsed = Date.parse(String(value));
    return isNaN(parsed) ? String(value) : new Date(parsed).toLocaleString();
  }

  function fmtKw(watts) {
    const w = Number(watts);
    return w >= 1000 || w === 0 ? (w / 1000).toFixed(1) + " kW" : w.toFixed(w < 10 ? 2 : 0) + " W";
  }

  /* One site from /api/sites: {name, miners, workers, hashrate, power_watts, power_budget_watts, budget_share,
   * accepted, rejected, blocks, silent_workers, curtailment: {state, reason, since, until, next_window}}. */
  function siteCard(site) {
    const card = document.createElement("div");
    card.className = "site";
    const head = document.createElement("h2");
    head.textContent = String(site.name ?? "site");
    const curtailment = site.curtailment && typeof site.curtailment === "object" ? site.curtailment : {};
    const state = String(curtailment.state || "normal");
    const badge = document.createElement("span");
    badge.className = "badge " + (state === "curtailed" ? "badge-off" : state === "ramping" ? "badge-ramp" : "badge-on");
    badge.textContent = state;
    head.appendChild(document.createTextNode(" "));
    head.appendChild(badge);
    card.appendChild(head);
    const power = Number(site.power_watts ?? 0);
    const budget = Number(site.power_budget_watts ?? 0);
    const facts = [
      ["Hashrate", window.PoolChart.formatHashrate(Number(site.hashrate ?? 0))],
      ["Miners / workers", fmtNumber(site.miners) + " / " + fmtNumber(site.workers)],
      ["Estimated power", fmtKw(power) + (budget > 0 ? " of " + fmtKw(budget) + " budget" : "")],
      ["Shares accepted / rejected", fmtNumber(site.accepted) + " / " + fmtNumber(site.rejected)],
      ["Blocks", fmtNumber(site.blocks)],
      ["Silent workers", fmtNumber(site.silent_workers)],
    ];
    if (state === "curtailed") {
      facts.push(["Curtailed", fmtWhen(curtailment.since) + " – " + fmtWhen(curtailment.until) +
        (curtailment.reason ? " (" + String(curtailment.reason) + ")" : "")]);
    }
    const next = curtailment.next_window;
    facts.push(["Next scheduled curtailment", next && typeof next === "object" ?
      fmtWhen(next.start) + " – " + fmtWhen(next.end) : "none"]);
    const table = document.createElement("table");
    const tbody = document.createElement("tbody");
    for (const [k, v] of facts) tbody.appendChild(row([k, v]));
    table.appendChild(tbody);
    card.appendChild(table);
    if (budget > 0) {
      const share = Math.max(0, site.budget_share ?? power / budget);
      const bar = document.createElement("div");
      bar.className = "budget";
      const fill = document.createElement("div");
      fill.className = "budget-fill" + (share > 1 ? " over" : "");
      fill.style.width = Math.min(100, share * 100).toFixed(1) + "%";
      bar.appendChild(fill);
      const label = document.createElement("span");
      label.className = "budget-label";
      label.textContent = (share * 100).toFixed(share < 0.1 ? 2 : 0) + "% of the power budget";
      card.appendChild(bar);
      card.appendChild(label);
    }
    return card;
  }

  async function sites() {
    const result = await getJson("/api/sites");
    const body = result.body || {};
    let list = Array.isArray(body) ? body : body.sites;
    if (list && !Array.isArray(list) && typeof list === "object") {
      list = Object.keys(list).map((name) => Object.assign({ name: name }, list[name]));
    }
    list = Array.isArray(list) ? list : [];
    $("sites-list").replaceChildren(...list.map(siteCard));
    $("sites-empty").hidden = list.length !== 0;
  }

  const PAGES = { overview: overview, address: address, sites: sites };

  async function refresh() {
    const page = PAGES[document.body.dataset.page];
    if (!page) return;
    try {
      await page();
      touch();
    } catch (err) {
      setText("updated", "Update failed: " + String(err && err.message ? err.message : err));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    spanButtons();
    refresh();
    window.setInterval(refresh, REFRESH_MS);
  });
})();

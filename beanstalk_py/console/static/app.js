// The beanstalk-py console: a hash-routed page over the JSON API in /api/.
// Job data is only ever put into the page with textContent (never innerHTML).
"use strict";
(function () {
  const POLL_MS = 2000;
  const main = document.getElementById("main");
  const statusLine = document.getElementById("status");
  const state = { who: null, timer: null, chart: null, tubes: { offset: 0, limit: 50, sort: "name", order: "asc", q: "" } };
  window.beanstalkConsole = state; // for tests and curious operators: the chart and the last data

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
      else if (k === "text") node.textContent = String(v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  async function api(path, body) {
    const init = { credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.headers["X-Beanstalk-Console"] = "1"; // the server's cross-site check wants it
      init.body = JSON.stringify(body);
    }
    const resp = await fetch("/api/" + path, init);
    let data = null;
    try { data = await resp.json(); } catch (e) { data = { error: resp.statusText }; }
    if (!resp.ok) {
      const err = new Error(data && data.error ? data.error : resp.statusText);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function say(text, bad) {
    statusLine.textContent = text;
    statusLine.className = bad ? "error" : "";
  }

  const isAdmin = () => state.who && state.who.level === "admin";
  const fmt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : String(n));
  const dur = (s) => {
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
  };
  const bytes = (n) => (n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB");

  async function whoami() {
    state.who = await api("whoami");
    document.getElementById("who").textContent = state.who.level === "none" ? "" :
      (state.who.level === "admin" ? "admin" : "read-only") + (state.who.admin_enabled ? "" : " (no --admin-token-file)");
    document.getElementById("logout").hidden = state.who.via !== "cookie";
    document.getElementById("login-link").hidden = state.who.via === "cookie" || (!state.who.admin_enabled && !state.who.token_required);
  }

  function card(key, value, bad) {
    return el("div", { class: "card" + (bad ? " bad" : "") }, el("div", { class: "k", text: key }), el("div", { class: "v", text: value }));
  }

  // --- overview: counters, rate chart, tube table -------------------------------------

  function renderOverview() {
    const cards = el("div", { class: "cards", id: "cards" });
    const chart = el("div", { id: "chart" });
    const filter = el("input", { type: "search", placeholder: "filter tubes", id: "tube-filter", value: state.tubes.q });
    filter.addEventListener("input", () => { state.tubes.q = filter.value; state.tubes.offset = 0; refresh(); });
    const pager = el("span", { id: "pager", class: "muted" });
    const prev = el("button", { id: "prev", on: { click: () => { state.tubes.offset = Math.max(0, state.tubes.offset - state.tubes.limit); refresh(); } } }, "‹ prev");
    const next = el("button", { id: "next", on: { click: () => { state.tubes.offset += state.tubes.limit; refresh(); } } }, "next ›");
    const cols = [["name", "tube"], ["ready", "ready"], ["urgent", "urgent"], ["reserved", "reserved"], ["delayed", "delayed"],
      ["buried", "buried"], ["waiting", "waiting"], ["watching", "watching"], ["using", "using"], ["paused", "paused (s)"], ["total", "total"]];
    const headRow = el("tr", {}, ...cols.map(([key, label]) => {
      const th = el("th", { "data-key": key, text: label });
      th.addEventListener("click", () => {
        const t = state.tubes;
        if (t.sort === key) t.order = t.order === "asc" ? "desc" : "asc";
        else { t.sort = key; t.order = key === "name" ? "asc" : "desc"; }
        t.offset = 0;
        refresh();
      });
      return th;
    }));
    const table = el("table", { id: "tubes" }, el("thead", {}, headRow), el("tbody"));
    main.replaceChildren(
      el("h1", { text: "Overview" }), cards,
      el("h2", { text: "Rates (per second, last 5 minutes)" }), chart,
      el("h2", { text: "Tubes" }), el("div", { class: "toolbar" }, filter, prev, next, pager), table);
    state.chart = null;
  }

  function makeChart(target, rates) {
    const width = Math.max(320, target.clientWidth - 10);
    const opts = {
      width, height: 220,
      series: [{}, { label: "put", stroke: "#2563eb" }, { label: "reserve", stroke: "#16a34a" },
        { label: "delete", stroke: "#9333ea" }, { label: "timeout", stroke: "#dc2626" }],
      axes: [{}, { size: 50 }],
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    };
    return new uPlot(opts, [rates.t, rates.put, rates.reserve, rates.delete, rates.timeout], target);
  }

  async function updateOverview() {
    const t = state.tubes;
    const qs = new URLSearchParams({ offset: t.offset, limit: t.limit, sort: t.sort, order: t.order, q: t.q });
    const [ov, rates, tubes] = await Promise.all([api("overview"), api("rates"), api("tubes?" + qs)]);
    state.overview = ov; state.rates = rates; state.tubeList = tubes;
    const s = ov.stats, b = ov.binlog;
    document.getElementById("cards").replaceChildren(
      card("ready", fmt(s["current-jobs-ready"])), card("urgent", fmt(s["current-jobs-urgent"])),
      card("reserved", fmt(s["current-jobs-reserved"])), card("delayed", fmt(s["current-jobs-delayed"])),
      card("buried", fmt(s["current-jobs-buried"]), s["current-jobs-buried"] > 0),
      card("total jobs", fmt(s["total-jobs"])), card("tubes", fmt(s["current-tubes"])),
      card("connections", fmt(s["current-connections"])), card("producers", fmt(s["current-producers"])),
      card("workers", fmt(s["current-workers"])), card("waiting", fmt(s["current-waiting"])),
      card("uptime", dur(ov.uptime)),
      card("binlog", !b.enabled ? "off" : b.failed ? "FAILED" : bytes(b.disk_bytes), b.failed),
      card("fsync mean", b.fsyncs ? (b.fsync_mean_seconds * 1000).toFixed(2) + " ms" : "–"),
      card("mode", ov.draining ? "draining" : ov.ready ? "serving" : "replaying", ov.draining));
    const target = document.getElementById("chart");
    const data = [rates.t, rates.put, rates.reserve, rates.delete, rates.timeout];
    if (!state.chart) { target.replaceChildren(); state.chart = makeChart(target, rates); } else state.chart.setData(data);
    for (const th of document.querySelectorAll("#tubes th")) {
      th.classList.toggle("sorted", th.dataset.key === t.sort);
      th.classList.toggle("desc", th.dataset.key === t.sort && t.order === "desc");
    }
    document.querySelector("#tubes tbody").replaceChildren(...tubes.items.map((r) => el("tr", { "data-tube": r.name },
      el("td", {}, el("a", { href: "#/tube/" + encodeURIComponent(r.name), text: r.name })),
      ...["ready", "urgent", "reserved", "delayed", "buried", "waiting", "watching", "using", "paused", "total"].map((k) => el("td", { class: "n-" + k, text: fmt(r[k]) })))));
    const last = Math.min(tubes.offset + tubes.items.length, tubes.matched);
    document.getElementById("pager").textContent = tubes.matched ?
      `${fmt(tubes.offset + 1)}–${fmt(last)} of ${fmt(tubes.matched)}` + (tubes.matched !== tubes.total ? ` (${fmt(tubes.total)} tubes)` : "") : "no tube matches";
    document.getElementById("prev").disabled = tubes.offset === 0;
    document.getElementById("next").disabled = last >= tubes.matched;
  }

  // --- tube and job pages --------------------------------------------------------------

  function bodyView(job) {
    if (job.body === null) return el("p", { class: "muted", text: `body: ${fmt(job.size)} bytes (hidden: log in with the admin token)` });
    const p = job.body;
    const note = `${p.kind}, ${fmt(p.size)} bytes` + (p.truncated ? `, first ${fmt(p.shown)} shown` : "");
    return el("div", {}, el("div", { class: "muted", text: "body: " + note }), el("pre", { class: "body", text: p.kind === "text" ? p.text : p.hex }));
  }

  function jobCard(title, job, actions) {
    if (!job) return el("div", { class: "job" }, el("h2", { text: title }), el("p", { class: "muted", text: "none" }));
    const s = job.stats;
    const keys = ["id", "tube", "state", "pri", "age", "delay", "ttr", "time-left", "reserves", "timeouts", "releases", "buries", "kicks"];
    const dl = el("dl", {}, ...keys.flatMap((k) => [el("dt", { text: k }), el("dd", { class: "s-" + k, text: s[k] })]));
    const buttons = [];
    if (isAdmin() && actions) {
      if (s.state === "buried" || s.state === "delayed")
        buttons.push(el("button", { class: "kick-job", on: { click: () => act(`jobs/${s.id}/kick`, {}, `kicked job ${s.id}`) } }, "Kick"));
      buttons.push(el("button", { class: "danger delete-job", on: { click: () => { if (confirm(`Delete job ${s.id}?`)) act(`jobs/${s.id}/delete`, {}, `deleted job ${s.id}`); } } }, "Delete"));
    }
    return el("div", { class: "job", "data-job": s.id }, el("h2", {}, title + " ", el("a", { href: "#/job/" + s.id, text: "#" + s.id })), dl, bodyView(job), ...buttons);
  }

  async function act(path, body, done) {
    try { await api(path, body); say(done); } catch (e) { say(e.message, true); }
    refresh();
  }

  function renderTube(name) {
    const kickN = el("input", { type: "number", min: "0", value: "1", id: "kick-n", class: "narrow" });
    const pauseS = el("input", { type: "number", min: "0", value: "60", id: "pause-s", class: "narrow" });
    const tools = isAdmin() ? [
      el("button", { id: "kick", on: { click: () => act(`tubes/${encodeURIComponent(name)}/kick`, { bound: Number(kickN.value) }, "kicked") } }, "Kick"), kickN,
      el("button", { id: "pause", on: { click: () => act(`tubes/${encodeURIComponent(name)}/pause`, { delay: Number(pauseS.value) }, "paused") } }, "Pause (s)"), pauseS,
      el("button", { id: "unpause", on: { click: () => act(`tubes/${encodeURIComponent(name)}/pause`, { delay: 0 }, "unpaused") } }, "Unpause"),
    ] : [el("span", { class: "muted", text: state.who && state.who.admin_enabled ? "log in with the admin token to act on this tube" : "read-only console (no --admin-token-file)" })];
    main.replaceChildren(el("h1", {}, "Tube ", el("span", { id: "tube-name", text: name })),
      el("div", { class: "cards", id: "cards" }), el("div", { class: "toolbar" }, ...tools), el("div", { class: "jobs", id: "jobs" }));
  }

  async function updateTube(name) {
    const t = await api("tubes/" + encodeURIComponent(name));
    state.tube = t;
    const s = t.stats;
    document.getElementById("cards").replaceChildren(
      card("ready", fmt(s["current-jobs-ready"])), card("urgent", fmt(s["current-jobs-urgent"])),
      card("reserved", fmt(s["current-jobs-reserved"])), card("delayed", fmt(s["current-jobs-delayed"])),
      card("buried", fmt(s["current-jobs-buried"]), s["current-jobs-buried"] > 0), card("total jobs", fmt(s["total-jobs"])),
      card("watching", fmt(s["current-watching"])), card("waiting", fmt(s["current-waiting"])),
      card("paused", s["pause-time-left"] ? s["pause-time-left"] + " s left" : "no"));
    document.getElementById("jobs").replaceChildren(
      jobCard("Next ready", t.next.ready, true), jobCard("Next delayed", t.next.delayed, true), jobCard("Next buried", t.next.buried, true));
  }

  function renderJob(id) {
    const input = el("input", { type: "number", min: "1", id: "job-id", value: id || "" });
    const form = el("form", { class: "toolbar" }, input, el("button", { type: "submit" }, "Show"));
    form.addEventListener("submit", (ev) => { ev.preventDefault(); location.hash = "#/job/" + input.value; });
    main.replaceChildren(el("h1", { text: "Job" }), form, el("div", { class: "jobs", id: "jobs" }));
  }

  async function updateJob(id) {
    const box = document.getElementById("jobs");
    if (!id) return;
    try {
      const j = await api("jobs/" + id);
      box.replaceChildren(jobCard("Job", j.job, true));
    } catch (e) {
      if (e.status !== 404) throw e;
      box.replaceChildren(el("p", { class: "muted", text: `job ${id}: not found` }));
    }
  }

  function renderLogin() {
    const input = el("input", { type: "password", id: "token", autocomplete: "current-password", placeholder: "token" });
    const form = el("form", { class: "login", id: "login" }, el("label", { for: "token", text: "Token (--admin-token-file, or --auth-token-file for read-only)" }), input, el("button", { type: "submit" }, "Log in"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const r = await api("login", { token: input.value });
        input.value = "";
        say("logged in: " + r.level);
        await whoami();
        location.hash = "#/";
      } catch (e) { say(e.message, true); }
    });
    main.replaceChildren(el("h1", { text: "Log in" }), form);
  }

  // --- routing and polling -------------------------------------------------------------

  function route() {
    const h = location.hash.replace(/^#/, "") || "/";
    if (h.startsWith("/tube/")) return { page: "tube", arg: decodeURIComponent(h.slice(6)) };
    if (h.startsWith("/job")) return { page: "job", arg: h.slice(5) };
    if (h === "/login") return { page: "login" };
    return { page: "overview" };
  }

  async function refresh() {
    const r = route();
    try {
      if (r.page === "overview") await updateOverview();
      else if (r.page === "tube") await updateTube(r.arg);
      else if (r.page === "job") await updateJob(r.arg);
      if (statusLine.className === "error" && statusLine.textContent.startsWith("server:")) say("");
    } catch (e) {
      if (e.status === 401) { location.hash = "#/login"; return; }
      say("server: " + e.message, true);
    }
  }

  async function show() {
    clearInterval(state.timer);
    try { await whoami(); } catch (e) { say("server: " + e.message, true); }
    const r = route();
    document.body.dataset.page = r.page;
    if (r.page === "login") return renderLogin();
    if (state.who && state.who.level === "none") { location.hash = "#/login"; return; }
    if (r.page === "overview") renderOverview();
    else if (r.page === "tube") renderTube(r.arg);
    else renderJob(r.arg);
    await refresh();
    state.timer = setInterval(refresh, POLL_MS);
  }

  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("logout", {}); } catch (e) { say(e.message, true); }
    location.hash = "#/";
    show();
  });
  window.addEventListener("hashchange", show);
  show();
})();

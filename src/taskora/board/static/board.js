// taskora board: the pages, in plain JavaScript (no build step, no network beyond the board).
// Every value from the server is put in the page as text (textContent), never as HTML.
"use strict";

(() => {
  const THEMES = ["auto", "light", "dark"];
  const THEME_KEY = "taskora-board-theme";
  const root = document.documentElement;
  const savedTheme = () => (THEMES.includes(localStorage.getItem(THEME_KEY)) ? localStorage.getItem(THEME_KEY) : "auto");
  root.dataset.theme = savedTheme();

  const baseMeta = document.querySelector('meta[name="taskora-base"]');
  const base = baseMeta ? baseMeta.content : "";
  const STATES = ["waiting", "active", "delayed", "completed", "failed", "expired", "cancelled"];
  const FINISHED = ["completed", "failed", "expired", "cancelled"];
  const PAGE = 20;

  let config = null;
  let live = null;
  let liveUrl = "";
  let page = {};

  // ---- small helpers -----------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, String(v));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  const show = (...children) => main.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  const link = (path, text, attrs) => h("a", { href: base + path, "data-nav": true, ...(attrs || {}) }, text);
  const badge = (state) => h("span", { class: "badge " + (state || "unknown") }, state || "unknown");
  const enc = encodeURIComponent;
  const pad = (n) => String(n).padStart(2, "0");
  function fmtTime(ms) {
    if (!ms) return "–";
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return "–";
    const a = Math.abs(ms);
    if (a < 1000) return `${Math.round(a)} ms`;
    if (a < 60000) return `${(a / 1000).toFixed(a < 10000 ? 1 : 0)} s`;
    if (a < 3600000) return `${Math.round(a / 60000)} min`;
    if (a < 86400000) return `${(a / 3600000).toFixed(1)} h`;
    return `${(a / 86400000).toFixed(1)} d`;
  }
  function rel(ms) {
    if (!ms) return "–";
    const d = ms - Date.now();
    return d >= 0 ? `in ${fmtDuration(d)}` : `${fmtDuration(d)} ago`;
  }
  const json = (v) => (v === null || v === undefined ? "null" : JSON.stringify(v, null, 2));
  const fmtNum = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

  function toast(message, bad) {
    const el = document.getElementById("toast");
    el.textContent = message;
    el.className = bad ? "bad" : "";
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
  }

  async function api(path, opts) {
    const method = (opts && opts.method) || "GET";
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") {
      init.headers["X-CSRF-Token"] = config ? config.csrf : "";
      if (opts && opts.body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(opts.body);
      }
    }
    const response = await fetch(base + "/api" + path, init);
    if (response.status === 401) {
      location.href = `${base}/login?next=${enc(location.pathname + location.search)}`;
      throw new Error("not logged in");
    }
    const doc = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(doc.error || response.statusText);
    return doc;
  }

  // an action button: confirm (optional), POST, toast, then refresh the page
  function action(label, path, opts) {
    const o = opts || {};
    if (config && config.read_only) return null;
    return h("button", {
      type: "button",
      class: o.class || "",
      "data-action": o.name || label,
      onclick: async (ev) => {
        if (o.confirm && !window.confirm(o.confirm)) return;
        ev.currentTarget.disabled = true;
        try {
          const doc = await api(path, { method: o.method || "POST", body: o.body });
          toast(o.done ? o.done(doc) : `${label}: done`);
          if (o.then) o.then(doc); else render();
        } catch (err) {
          toast(`${label}: ${err.message}`, true);
          render();
        }
      },
    }, label);
  }

  function table(headers, rows, empty) {
    if (!rows.length) return h("p", { class: "muted" }, empty || "Nothing here.");
    return h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, headers.map((x) => (typeof x === "string" ? h("th", {}, x) : x)))),
      h("tbody", {}, rows)));
  }

  function pager(total, offset, go) {
    const last = Math.max(0, total - 1);
    return h("div", { class: "pager" },
      h("span", { class: "muted" }, total ? `${offset + 1}–${Math.min(offset + PAGE, total)} of ${fmtNum(total)}` : "0"),
      h("button", { type: "button", disabled: offset <= 0, onclick: () => go(Math.max(0, offset - PAGE)) }, "‹ Prev"),
      h("button", { type: "button", disabled: offset + PAGE > last, onclick: () => go(offset + PAGE) }, "Next ›"));
  }

  function query() { return new URLSearchParams(location.search); }
  function go(path) {
    history.pushState(null, "", base + path);
    render();
  }

  // ---- charts ----------------------------------------------------------------------------
  function barChart(points, labelEvery, labelOf) {
    const w = 720, hgt = 140, padB = 18;
    const max = Math.max(1, ...points.map((p) => p.completed + p.failed));
    const bw = w / Math.max(points.length, 1);
    const svg = s("svg", { class: "chart", viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none", role: "img" });
    svg.append(s("line", { class: "axis", x1: 0, y1: hgt - padB, x2: w, y2: hgt - padB }));
    points.forEach((p, i) => {
      const x = i * bw + 1, width = Math.max(bw - 2, 1), scale = (hgt - padB - 4) / max;
      const hc = p.completed * scale, hf = p.failed * scale;
      const title = `${labelOf(p.t)}: ${p.completed} completed, ${p.failed} failed`;
      if (hc > 0) svg.append(s("rect", { class: "c", x, width, y: hgt - padB - hc, height: hc }, s("title", {}, title)));
      if (hf > 0) svg.append(s("rect", { class: "f", x, width, y: hgt - padB - hc - hf, height: hf }, s("title", {}, title)));
      if (i % labelEvery === 0) svg.append(s("text", { x, y: hgt - 4 }, labelOf(p.t)));
    });
    svg.append(s("text", { x: 2, y: 11 }, `max ${fmtNum(max)}`));
    return svg;
  }
  const hhmm = (t) => { const d = new Date(t); return `${pad(d.getHours())}:${pad(d.getMinutes())}`; };

  // ---- pages -----------------------------------------------------------------------------
  // A page's own reads. A render that a newer one replaced while it waited (a quick second
  // click, a live refresh) stops at its read: it neither draws over the newer page nor sets
  // that page's live handlers. render() drops the error of a replaced render.
  async function load(path) {
    const mine = rendering;
    const doc = await api(path);
    if (mine !== rendering) throw new Error("replaced by a newer render");
    return doc;
  }

  async function overviewPage() {
    const doc = await load("/overview");
    page.doc = doc;
    const stat = (state) => h("div", { class: "stat " + state },
      h("div", { class: "n", id: "total-" + state }, fmtNum(doc.totals[state])),
      h("div", { class: "label" }, state));
    const hour = h("div", { id: "chart-hour" });
    const drawHour = () => hour.replaceChildren(barChart(doc.throughput.hour, 10, hhmm));
    drawHour();
    const day = barChart(doc.throughput.day, 4, hhmm);
    const rows = doc.tasks.map((t) => h("tr", { "data-task": t.name },
      h("td", {}, link(`/tasks/${enc(t.name)}`, t.name)),
      STATES.map((st) => h("td", { class: "num", "data-state": st }, fmtNum(t.counts[st]))),
      h("td", { class: "muted" }, t.config
        ? `×${t.config.concurrency}${t.config.retry ? `, ${t.config.retry.attempts} attempts` : ""}${t.config.timeout_ms ? `, timeout ${fmtDuration(t.config.timeout_ms)}` : ""}, v${t.config.version}`
        : "not registered here")));
    const server = doc.server || {};
    const facts = [["backend", server.backend]];
    if (server.backend === "redis") {
      facts.push(["Redis version", server.version], ["memory used", server.used_memory_human],
        ["clients", server.clients], ["blocked clients (idle worker connections)", server.blocked_clients],
        ["Redis uptime", fmtDuration((server.uptime_s || 0) * 1000)]);
    }
    facts.push(["board uptime", fmtDuration(doc.board.uptime_s * 1000)], ["taskora", config.version]);
    // worker processes alive (their heartbeats in the store), redrawn by every stats frame
    const alive = h("span", { id: "workers-alive" }, "0");
    const workers = h("div", { id: "workers" });
    const drawWorkers = (list) => {
      alive.textContent = fmtNum(list.length);
      workers.replaceChildren(table(["host", "pid", "tasks (concurrency)", "running (last beat)", "started", "last seen", "taskora"],
        list.map((w) => h("tr", { "data-worker": w.id },
          h("td", {}, w.host), h("td", { class: "num" }, w.pid),
          h("td", {}, Object.entries(w.tasks).map(([t, c]) => `${t} ×${c}`).join(", ") || "–"),
          h("td", { class: "num" }, `${fmtNum(w.active)} / ${fmtNum(w.concurrency)}`),
          h("td", { title: fmtTime(w.started) }, rel(w.started)),
          h("td", { title: fmtTime(w.last_seen) }, rel(w.last_seen)),
          h("td", { class: "muted" }, w.version))),
        "No worker process is running."));
    };
    drawWorkers(doc.workers || []);
    show(
      h("h1", {}, "Overview"),
      h("div", { class: "stats" }, STATES.map(stat)),
      h("div", { class: "grid" },
        h("section", { class: "card" }, h("h2", {}, "Throughput, last hour (per minute)"), hour,
          h("div", { class: "legend" }, h("span", { class: "c" }, "completed"), h("span", { class: "f" }, "failed"))),
        h("section", { class: "card" }, h("h2", {}, "Throughput, last day (per hour)"), day)),
      h("section", { class: "card" }, h("h2", {}, "Tasks"),
        table(["task", ...STATES.map((st) => h("th", { class: "num" }, st)), "config"], rows, "No tasks yet.")),
      h("section", { class: "card" }, h("h2", {}, "Workers alive: ", alive), workers),
      h("section", { class: "card" }, h("h2", {}, "Store"),
        h("dl", { class: "meta" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === undefined || v === null ? "–" : String(v))]))));
    page.onStats = (stats) => {
      if (stats.workers) drawWorkers(stats.workers);
      const known = new Set(doc.tasks.map((t) => t.name));
      if (Object.keys(stats.tasks).some((name) => !known.has(name))) { render(); return; }
      const totals = Object.fromEntries(STATES.map((st) => [st, 0]));
      for (const [name, counts] of Object.entries(stats.tasks)) {
        const row = main.querySelector(`tr[data-task="${CSS.escape(name)}"]`);
        for (const st of STATES) {
          totals[st] += counts[st] || 0;
          const cell = row && row.querySelector(`td[data-state="${st}"]`);
          if (cell) cell.textContent = fmtNum(counts[st]);
        }
      }
      for (const st of STATES) {
        const el = document.getElementById("total-" + st);
        if (el) el.textContent = fmtNum(totals[st]);
      }
      for (const m of stats.minutes || []) {
        const at = doc.throughput.hour.findIndex((p) => p.t === m.t);
        if (at >= 0) doc.throughput.hour[at] = m;
        else if (m.t > doc.throughput.hour[doc.throughput.hour.length - 1].t) {
          doc.throughput.hour.push(m);
          doc.throughput.hour.shift();
        }
      }
      drawHour();
    };
  }

  async function taskPage([task]) {
    const q = query();
    const state = q.get("state") || "waiting";
    const offset = Number(q.get("offset") || 0);
    const doc = await load(`/tasks/${enc(task)}/jobs?state=${enc(state)}&limit=${PAGE}&offset=${offset}`);
    const path = (st, off) => `/tasks/${enc(task)}?state=${st}${off ? `&offset=${off}` : ""}`;
    const tabs = h("nav", { class: "tabs" }, STATES.map((st) => link(path(st, 0),
      [st, h("span", { class: "count", "data-count": st }, fmtNum(doc.counts[st]))],
      { class: st === state ? "current" : "" })));
    const rows = doc.jobs.map((j) => h("tr", { "data-job": j.id },
      h("td", {}, link(`/jobs/${enc(j.id)}`, j.id, { class: "mono" })),
      h("td", {}, badge(j.state)),
      h("td", { class: "num" }, j.attempt),
      h("td", {}, fmtTime(j.created)),
      h("td", {}, fmtTime(j.finished)),
      h("td", { class: "err", title: j.error || "" }, j.error || ""),
      h("td", { class: "data mono", title: j.data }, j.data)));
    const purgeState = h("select", { "aria-label": "finished state to purge" }, FINISHED.map((st) => h("option", { value: st }, st)));
    const purgeAge = h("select", { "aria-label": "older than" },
      [["0", "any age"], ["3600000", "older than 1 h"], ["86400000", "older than 1 d"], ["604800000", "older than 7 d"]]
        .map(([v, t]) => h("option", { value: v }, t)));
    const canWrite = !config.read_only;
    show(
      h("h1", {}, "Task ", h("span", { class: "mono" }, task)),
      h("div", { class: "toolbar" },
        doc.counts.failed > 0 ? action(`Retry all failed (${fmtNum(doc.counts.failed)})`, `/tasks/${enc(task)}/retry-all`,
          { name: "retry-all", confirm: `Retry every failed job of ${task}?`, done: (d) => `retried ${d.retried} job(s)` }) : null,
        h("span", { class: "spacer" }),
        canWrite ? [h("span", { class: "muted" }, "Purge"), purgeState, purgeAge,
          h("button", { type: "button", class: "danger", "data-action": "purge", onclick: async () => {
            if (!window.confirm(`Delete ${task}'s ${purgeState.value} jobs (${purgeAge.selectedOptions[0].textContent})?`)) return;
            try {
              const d = await api(`/tasks/${enc(task)}/purge?state=${purgeState.value}&older_than_ms=${purgeAge.value}`, { method: "POST" });
              toast(`deleted ${d.deleted} ${d.state} job(s)`);
            } catch (err) { toast(err.message, true); }
            render();
          } }, "Purge")] : null),
      tabs,
      h("section", { class: "card" },
        table(["id", "state", "attempt", "created", "finished", "error", "data"], rows, `No ${state} jobs.`),
        pager(doc.total, offset, (off) => go(path(state, off)))));
    let refetch = null;
    page.onStats = (stats) => {
      const counts = stats.tasks[task];
      if (!counts) return;
      for (const st of STATES) {
        const el = main.querySelector(`[data-count="${st}"]`);
        if (el) el.textContent = fmtNum(counts[st]);
      }
      if (counts[state] !== doc.total && offset === 0 && !refetch) {
        refetch = setTimeout(() => render(), 250);
      }
    };
  }

  async function jobPage([id]) {
    const job = await load(`/jobs/${enc(id)}`);
    page.live = `job=${enc(id)}&tasks=${enc(job.task)}`;
    const canCancel = !FINISHED.includes(job.state);
    const started = job.started_at, ended = job.finished_at;
    const meta = [
      ["task", link(`/tasks/${enc(job.task)}`, job.task)],
      ["state", badge(job.state)],
      ["attempt", job.max_attempts ? `${job.attempt} of ${job.max_attempts}` : String(job.attempt)],
      ["payload version", String(job.version)],
      ["created", fmtTime(job.created_at)],
      ["started", fmtTime(started)],
      ["finished", fmtTime(ended)],
      ["took", started && ended ? fmtDuration(ended - started) : "–"],
    ];
    if (job.workflow) meta.push(["workflow", link(`/workflows/${enc(job.workflow.id)}`, `${job.workflow.id} (step ${job.workflow.step})`, { class: "mono" })]);
    let progress = null;
    if (typeof job.progress === "number") {
      const bar = h("div", {});
      bar.style.width = `${Math.max(0, Math.min(100, job.progress))}%`;
      progress = h("section", { class: "card" }, h("h2", {}, `Progress ${job.progress}%`), h("div", { class: "progress" }, bar));
    } else if (job.progress !== null && job.progress !== undefined) {
      progress = h("section", { class: "card" }, h("h2", {}, "Progress"), h("pre", {}, json(job.progress)));
    }
    const timeline = job.timeline.map(([st, at], i) => h("li", {},
      h("span", { class: "when" }, fmtTime(at) + "." + String(at % 1000).padStart(3, "0")), badge(st),
      i > 0 ? h("span", { class: "muted" }, "+" + fmtDuration(at - job.timeline[i - 1][1])) : null));
    const logs = job.logs.map((entry) => {
      const e = entry && typeof entry === "object" ? entry : { message: entry };
      return h("tr", {}, h("td", { class: "muted" }, e.timestamp ? fmtTime(e.timestamp) : ""),
        h("td", {}, e.level || ""), h("td", {}, e.message === undefined ? json(e) : String(e.message)),
        h("td", { class: "mono" }, e.meta ? JSON.stringify(e.meta) : ""));
    });
    show(
      h("h1", {}, "Job ", h("span", { class: "mono", id: "job-id" }, job.id), h("span", { id: "job-state" }, badge(job.state)),
        job.state === "failed" ? action("Retry", `/jobs/${enc(job.id)}/retry`, { name: "retry", class: "primary", done: () => "retried: back to waiting" }) : null,
        canCancel ? action("Cancel", `/jobs/${enc(job.id)}/cancel`, { name: "cancel", class: "danger", confirm: "Cancel this job?", body: { reason: "cancelled from the board" }, done: (d) => d.outcome }) : null),
      h("div", { class: "grid" },
        h("section", { class: "card" }, h("h2", {}, "Details"), h("dl", { class: "meta" }, meta.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
        h("section", { class: "card" }, h("h2", {}, "Timeline"), h("ul", { class: "timeline" }, timeline))),
      progress,
      job.error ? h("section", { class: "card error-box" }, h("h2", {}, "Error"), h("pre", { id: "job-error" }, job.error)) : null,
      h("div", { class: "grid" },
        h("section", { class: "card" }, h("h2", {}, "Data"), h("pre", { id: "job-data" }, json(job.data))),
        h("section", { class: "card" }, h("h2", {}, "Result"), h("pre", { id: "job-result" }, json(job.result)))),
      h("section", { class: "card" }, h("h2", {}, `Logs (${job.logs.length})`),
        table(["time", "level", "message", "meta"], logs, "No log lines.")));
    let refetch = null;
    page.onJobs = (frame) => {
      if (frame.events.some((e) => e.id === id) && !refetch) refetch = setTimeout(() => render(), 200);
    };
  }

  async function schedulesPage() {
    const doc = await load("/schedules");
    const rows = doc.schedules.map((sc) => h("tr", { "data-schedule": sc.name },
      h("td", {}, sc.name), h("td", {}, link(`/tasks/${enc(sc.task)}`, sc.task)),
      h("td", { class: "mono" }, sc.cron ? `${sc.cron}${sc.timezone ? " " + sc.timezone : ""}` : `every ${fmtDuration(sc.every_s * 1000)}`),
      h("td", { "data-rel": sc.next_run || "" }, sc.paused ? badge("paused") : rel(sc.next_run)),
      h("td", { "data-rel": sc.last_run || "" }, rel(sc.last_run)),
      h("td", {}, sc.last_job_id ? link(`/jobs/${enc(sc.last_job_id)}`, sc.last_job_id, { class: "mono" }) : "–"),
      h("td", {},
        sc.paused ? action("Resume", `/schedules/${enc(sc.name)}/resume`, { name: "resume" }) : action("Pause", `/schedules/${enc(sc.name)}/pause`, { name: "pause" }),
        " ", action("Trigger", `/schedules/${enc(sc.name)}/trigger`, { name: "trigger", done: (d) => `dispatched ${d.job_id}` }),
        " ", action("Remove", `/schedules/${enc(sc.name)}`, { name: "remove", method: "DELETE", class: "danger", confirm: `Remove schedule ${sc.name}?` }))));
    show(h("h1", {}, "Schedules"), h("section", { class: "card" },
      table(["name", "task", "when", "next run", "last run", "last job", ""], rows, "No schedules.")));
    page.onStats = () => {
      for (const td of main.querySelectorAll("td[data-rel]")) {
        if (td.dataset.rel && !td.querySelector(".badge")) td.textContent = rel(Number(td.dataset.rel));
      }
    };
  }

  async function workflowsPage() {
    const q = query();
    const state = q.get("state") || "";
    const offset = Number(q.get("offset") || 0);
    const doc = await load(`/workflows?limit=${PAGE}&offset=${offset}${state ? "&state=" + enc(state) : ""}`);
    const path = (st, off) => `/workflows${st || off ? "?" : ""}${st ? "state=" + st : ""}${st && off ? "&" : ""}${off ? "offset=" + off : ""}`;
    const rows = doc.workflows.map((w) => h("tr", {},
      h("td", {}, link(`/workflows/${enc(w.id)}`, w.id.slice(0, 12) + "…", { class: "mono", title: w.id })),
      h("td", {}, w.name || "–"), h("td", {}, badge(w.state)),
      h("td", { class: "num" }, `${w.steps_done}/${w.steps_total}`),
      h("td", {}, w.tasks.join(", ")), h("td", {}, fmtTime(w.created)),
      h("td", { class: "err" }, w.error || "")));
    show(h("h1", {}, "Workflows"),
      h("nav", { class: "tabs" }, ["", "running", "completed", "failed", "cancelled"].map((st) =>
        link(path(st, 0), st || "all", { class: st === state ? "current" : "" }))),
      h("section", { class: "card" }, table(["id", "name", "state", "steps", "tasks", "created", "error"], rows, "No workflows."),
        h("div", { class: "pager" },
          h("button", { type: "button", disabled: offset <= 0, onclick: () => go(path(state, Math.max(0, offset - PAGE))) }, "‹ Prev"),
          h("button", { type: "button", disabled: doc.workflows.length < PAGE, onclick: () => go(path(state, offset + PAGE)) }, "Next ›"))));
  }

  function dag(steps) {
    const layer = [];
    steps.forEach((st, i) => { layer[i] = st.deps.length ? 1 + Math.max(...st.deps.map((d) => layer[d] || 0)) : 0; });
    const columns = [];
    steps.forEach((st, i) => { (columns[layer[i]] = columns[layer[i]] || []).push(i); });
    const W = 170, H = 46, GX = 60, GY = 18;
    const pos = [];
    columns.forEach((col, c) => col.forEach((i, r) => { pos[i] = { x: 10 + c * (W + GX), y: 10 + r * (H + GY) }; }));
    const width = 20 + columns.length * (W + GX) - GX;
    const height = 20 + Math.max(...columns.map((col) => col.length)) * (H + GY) - GY;
    const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "workflow graph" });
    steps.forEach((st, i) => st.deps.forEach((d) => {
      const a = pos[d], b = pos[i];
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      svg.append(s("path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
    }));
    steps.forEach((st, i) => {
      const p = pos[i];
      svg.append(s("g", { class: `node ${st.state}`, "data-step": i, transform: `translate(${p.x},${p.y})`,
        onclick: () => go(`/jobs/${enc(st.job_id)}`) },
        s("title", {}, `${st.job_id}: ${st.state}`),
        s("rect", { width: W, height: H, rx: 6 }),
        s("text", { x: 10, y: 19 }, `${i}. ${st.task}`.slice(0, 24)),
        s("text", { x: 10, y: 36, class: "sub" }, st.state)));
    });
    return h("div", { class: "dag" }, svg);
  }

  async function workflowPage([id]) {
    const w = await load(`/workflows/${enc(id)}`);
    if (w.state === "running") page.live = `workflow=${enc(id)}&tasks=${enc([...new Set(w.steps.map((st) => st.task))].join(","))}`;
    const rows = w.steps.map((st) => h("tr", {},
      h("td", { class: "num" }, st.index), h("td", {}, st.task), h("td", {}, badge(st.state)),
      h("td", {}, st.deps.join(", ") || "–"),
      h("td", {}, st.state === "pending" ? h("span", { class: "mono muted" }, st.job_id) : link(`/jobs/${enc(st.job_id)}`, st.job_id, { class: "mono" })),
      st.error ? h("td", { class: "err", title: st.error }, st.error.split("\n")[0])
        : h("td", { class: "mono" }, st.state === "completed" ? json(st.result).slice(0, 120) : "–")));
    show(
      h("h1", {}, "Workflow ", h("span", { class: "mono" }, w.id), badge(w.state),
        w.state === "running" ? action("Cancel", `/workflows/${enc(w.id)}/cancel`, { name: "cancel-workflow", class: "danger", confirm: "Cancel this workflow and its unfinished steps?" }) : null),
      h("section", { class: "card" }, h("h2", {}, w.name ? `“${w.name}”, created ${fmtTime(w.created)}` : `Created ${fmtTime(w.created)}`), dag(w.steps)),
      w.error ? h("section", { class: "card error-box" }, h("h2", {}, "Error"), h("pre", {}, w.error)) : null,
      w.state === "completed" ? h("section", { class: "card" }, h("h2", {}, "Result"), h("pre", {}, json(w.result))) : null,
      h("section", { class: "card" }, h("h2", {}, "Steps"), table(["#", "task", "state", "after", "job", "result / error"], rows)));
    let refetch = null;
    page.onJobs = (frame) => {
      if (frame.events.some((e) => e.id.startsWith(`wf-${id}-`)) && !refetch) refetch = setTimeout(() => render(), 300);
    };
  }

  async function dlqPage() {
    const q = query();
    const task = q.get("task") || "";
    const offset = Number(q.get("offset") || 0);
    const [doc, tasks] = await Promise.all([
      load(`/dlq?limit=${PAGE}&offset=${offset}${task ? "&task=" + enc(task) : ""}`), load("/tasks")]);
    const pick = h("select", { "aria-label": "task", onchange: (e) => go(`/dlq${e.target.value ? "?task=" + enc(e.target.value) : ""}`) },
      h("option", { value: "" }, "all tasks"), tasks.tasks.map((t) => h("option", { value: t.name, selected: t.name === task }, t.name)));
    const groups = doc.groups.map((g) => h("tr", {},
      h("td", { class: "err" }, g.error), h("td", { class: "num" }, fmtNum(g.count)), h("td", {}, g.tasks.join(", ")),
      h("td", {}, fmtTime(g.latest)), h("td", {}, link(`/jobs/${enc(g.sample)}`, "example", { class: "mono" }))));
    const rows = doc.jobs.map((j) => h("tr", { "data-job": j.id },
      h("td", {}, link(`/jobs/${enc(j.id)}`, j.id, { class: "mono" })), h("td", {}, j.task),
      h("td", { class: "num" }, j.attempt), h("td", {}, fmtTime(j.finished)),
      h("td", { class: "err", title: j.error || "" }, j.error || ""),
      h("td", {}, action("Retry", `/dlq/${enc(j.id)}/retry`, { name: "retry", done: () => `retried ${j.id}` }))));
    show(h("h1", {}, "Dead letters"),
      h("div", { class: "toolbar" }, pick, h("span", { class: "muted" }, `${fmtNum(doc.total)} failed job(s)`),
        h("span", { class: "spacer" }),
        doc.total > 0 ? action("Retry all", `/dlq/retry-all${task ? "?task=" + enc(task) : ""}`,
          { name: "retry-all", confirm: `Retry all ${doc.total} failed job(s)${task ? " of " + task : ""}?`, done: (d) => `retried ${d.retried} job(s)` }) : null),
      h("section", { class: "card" }, h("h2", {}, `By error (newest ${fmtNum(doc.scanned)} per task)`),
        table(["error", h("th", { class: "num" }, "jobs"), "tasks", "latest", ""], groups, "No failed jobs.")),
      h("section", { class: "card" }, h("h2", {}, "Failed jobs, newest first"),
        table(["id", "task", "attempts", "failed at", "error", ""], rows, "No failed jobs."),
        pager(doc.total, offset,
          (off) => go(`/dlq?${task ? "task=" + enc(task) + "&" : ""}offset=${off}`))));
  }

  async function versionsPage() {
    const doc = await load("/versions");
    const cards = doc.tasks.map((m) => {
      const total = Object.values(m.by_version).reduce((a, b) => a + b, 0);
      const rows = Object.entries(m.by_version).map(([v, n]) => {
        const bar = h("div", { class: "bar" });
        bar.style.width = `${total ? Math.max(2, (100 * n) / total) : 0}%`;
        return h("tr", {}, h("td", { class: "num" }, "v" + v), h("td", { class: "num" }, fmtNum(n)), h("td", {}, bar));
      });
      let verdict = "Not registered in this process: its version and since are unknown here.";
      if (m.version !== null) {
        verdict = m.max_since !== null && m.max_since > m.since
          ? `since can be raised from ${m.since} to ${m.max_since} (no unfinished job is older).`
          : `since stays at ${m.since}: ${m.oldest !== null && m.oldest <= m.since ? `jobs of v${m.oldest} are still unfinished` : "it is already as high as it can go"}.`;
      }
      return h("section", { class: "card", "data-task": m.task },
        h("h2", {}, link(`/tasks/${enc(m.task)}`, m.task)),
        h("dl", { class: "meta" },
          h("dt", {}, "version"), h("dd", {}, m.version ?? "–"), h("dt", {}, "since"), h("dd", {}, m.since ?? "–"),
          h("dt", {}, "migrations"), h("dd", {}, m.migrations), h("dt", {}, "oldest unfinished"), h("dd", {}, m.oldest === null ? "–" : "v" + m.oldest)),
        h("p", {}, verdict),
        table(["payload", h("th", { class: "num" }, "unfinished jobs"), ""], rows, "No unfinished jobs."));
    });
    show(h("h1", {}, "Versions"), cards.length ? h("div", { class: "grid" }, cards) : h("p", { class: "muted" }, "No tasks yet."));
  }

  // ---- routing, live updates, keys ---------------------------------------------------------
  const routes = [
    [/^\/$/, overviewPage, "1"],
    [/^\/tasks\/([^/]+)$/, taskPage, "1"],
    [/^\/jobs\/([^/]+)$/, jobPage, null],
    [/^\/schedules$/, schedulesPage, "2"],
    [/^\/workflows$/, workflowsPage, "3"],
    [/^\/workflows\/([^/]+)$/, workflowPage, "3"],
    [/^\/dlq$/, dlqPage, "4"],
    [/^\/versions$/, versionsPage, "5"],
  ];
  let main = null;
  let rendering = 0;

  async function render() {
    const path = location.pathname.slice(base.length) || "/";
    const mine = ++rendering;
    page = {};
    const found = routes.find(([re]) => re.test(path));
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("current", !!found && a.dataset.key === found[2]);
    if (!found) { show(h("h1", {}, "Not found"), link("/", "Back to the overview")); return; }
    const args = path.match(found[0]).slice(1).map(decodeURIComponent);
    const current = {};
    page = current;
    try {
      await found[1](args);
    } catch (err) {
      if (mine !== rendering) return;
      show(h("section", { class: "card error-box" }, h("h2", {}, "Could not load this page"), h("p", {}, err.message)));
    }
    if (mine === rendering) connectLive(current.live || "");
  }

  function setLive(on) {
    const el = document.getElementById("live");
    el.classList.toggle("on", on);
    el.title = on ? "Live updates: connected" : "Live updates: reconnecting";
  }

  function connectLive(filter) {
    const url = `${base}/api/events${filter ? "?" + filter : ""}`;
    if (live && liveUrl === url) return;
    if (live) live.close();
    liveUrl = url;
    live = new EventSource(url);
    live.addEventListener("open", () => setLive(true));
    live.addEventListener("error", () => setLive(false));
    live.addEventListener("stats", (e) => { if (page.onStats) page.onStats(JSON.parse(e.data)); });
    live.addEventListener("jobs", (e) => { if (page.onJobs) page.onJobs(JSON.parse(e.data)); });
  }

  function cycleTheme() {
    const next = THEMES[(THEMES.indexOf(savedTheme()) + 1) % THEMES.length];
    localStorage.setItem(THEME_KEY, next);
    root.dataset.theme = next;
    const button = document.getElementById("theme");
    if (button) button.textContent = `theme: ${next}`;
  }

  async function start() {
    main = document.getElementById("main");
    if (!main) return; // the login page: the theme is all it needs
    config = await api("/config");
    document.getElementById("theme").textContent = `theme: ${savedTheme()}`;
    document.getElementById("theme").addEventListener("click", cycleTheme);
    if (config.user) document.getElementById("user").textContent = config.user + (config.read_only ? " (read-only)" : "");
    else if (config.read_only) document.getElementById("user").textContent = "read-only";
    const logout = document.getElementById("logout");
    if (config.auth) {
      logout.hidden = false;
      logout.addEventListener("click", async () => {
        await fetch(`${base}/logout`, { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": config.csrf } });
        location.href = `${base}/login`;
      });
    }
    document.addEventListener("click", (e) => {
      const a = e.target.closest("a[data-nav]");
      if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
      e.preventDefault();
      const url = new URL(a.href);
      go(url.pathname.slice(base.length) + url.search);
    });
    window.addEventListener("popstate", render);
    document.getElementById("search").addEventListener("submit", (e) => {
      e.preventDefault();
      const id = document.getElementById("search-input").value.trim();
      if (id) go(`/jobs/${enc(id)}`);
    });
    document.addEventListener("keydown", (e) => {
      const t = e.target;
      if (e.ctrlKey || e.metaKey || e.altKey || (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA"))) return;
      const nav = document.querySelector(`#nav a[data-key="${e.key}"]`);
      if (nav) { e.preventDefault(); nav.click(); } else if (e.key === "/") { e.preventDefault(); document.getElementById("search-input").focus(); } else if (e.key === "t") cycleTheme();
    });
    await render();
  }

  document.addEventListener("DOMContentLoaded", () => {
    start().catch((err) => {
      const m = document.getElementById("main");
      if (m) m.replaceChildren(h("section", { class: "card error-box" }, h("h2", {}, "The board could not start"), h("p", {}, err.message)));
    });
  });
})();

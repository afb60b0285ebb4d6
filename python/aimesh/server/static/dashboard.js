// AiMesh dashboard: polls dashboard/state and renders it.
// Plain JS without dependencies. CSP-friendly: no inline code, and gateway
// data only ever reaches the page through textContent (never innerHTML), so
// an endpoint or agent id cannot inject markup.
"use strict";

(() => {
  const POLL_MS = 1000;
  const WINDOW_MS = 120_000; // what the charts show
  const MAX_DECISIONS = 15;
  const KEY_STORE = "aimesh.adminKey";
  const COLORS = {
    rate: "#2f6fde",
    p50: "#2a9d55",
    p99: "#d9822b",
    grid: "#dde2e8",
    text: "#5b6675",
  };

  const $ = (id) => document.getElementById(id);
  // One entry per snapshot, oldest first, in server time: {t, t0, rate, p50, p99}
  // where rate is messages/s over [t0, t], the interval since the previous
  // snapshot (null for the first one, which has no previous).
  const samples = [];
  let previous = null;
  let askedForKey = false;

  // -- formatting --------------------------------------------------------------

  const intFormat = new Intl.NumberFormat("en-US");
  const fmtInt = (v) => (v == null ? "–" : intFormat.format(v));
  const fmtNum = (v, digits = 1) => (v == null ? "–" : Number(v).toFixed(digits));
  const fmtMs = (v) => (v == null ? "–" : Number(v).toFixed(v < 10 ? 2 : v < 100 ? 1 : 0));
  const fmtPct = (v) => (v == null ? "–" : `${(v * 100).toFixed(1)}%`);
  const fmtTime = (ms) => new Date(ms).toLocaleTimeString("en-GB", { hour12: false });

  // -- polling -----------------------------------------------------------------

  function setStatus(text, state) {
    const el = $("status");
    el.textContent = text;
    el.dataset.state = state;
  }

  function authHeaders() {
    const key = sessionStorage.getItem(KEY_STORE);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function errorMessage(res) {
    try {
      return (await res.json()).error.message;
    } catch {
      return `HTTP ${res.status}`;
    }
  }

  async function poll() {
    let res;
    try {
      res = await fetch("dashboard/state", {
        headers: { Accept: "application/json", ...authHeaders() },
        cache: "no-store",
      });
    } catch {
      setStatus("gateway unreachable", "error");
      return;
    }
    if (res.status === 401) {
      // No key or a wrong one: forget it, and ask once per page load so a
      // wrong key does not turn into a prompt every second.
      sessionStorage.removeItem(KEY_STORE);
      if (!askedForKey) {
        askedForKey = true;
        const key = window.prompt("Admin key (AIMESH_ADMIN_KEY) for the dashboard:");
        if (key && key.trim()) {
          sessionStorage.setItem(KEY_STORE, key.trim());
          return poll();
        }
      }
      setStatus(`${await errorMessage(res)} (reload to enter the admin key)`, "error");
      return;
    }
    if (!res.ok) {
      // 403: admin routes are disabled on this address; no key would help.
      setStatus(await errorMessage(res), "error");
      return;
    }
    render(await res.json());
    setStatus(`live · ${fmtTime(Date.now())}`, "live");
  }

  async function loop() {
    try {
      await poll();
    } catch (err) {
      setStatus(`error: ${err.message}`, "error");
    }
    // Next poll only after this answer: a slow gateway is never asked twice at once.
    setTimeout(loop, POLL_MS);
  }

  // -- rendering ---------------------------------------------------------------

  function record(s) {
    const t = s.server_time_ms;
    let rate = null;
    // A smaller total means the gateway restarted: no rate for that interval.
    if (previous && t > previous.t && s.messages_total >= previous.total) {
      rate = ((s.messages_total - previous.total) * 1000) / (t - previous.t);
    }
    const t0 = previous ? previous.t : t;
    previous = { t, total: s.messages_total };
    // An empty histogram reads 0 ms: no latency yet is a gap, not a zero.
    const measured = s.latency_ms.count > 0;
    const p50 = measured ? s.latency_ms.p50 : null;
    const p99 = measured ? s.latency_ms.p99 : null;
    samples.push({ t, t0, rate, p50, p99 });
    while (samples[0].t < t - WINDOW_MS) samples.shift();
  }

  function setValue(id, value, text) {
    const el = $(id);
    el.dataset.value = String(value);
    el.textContent = text;
  }

  function render(s) {
    record(s);
    const rate = samples[samples.length - 1].rate ?? 0;
    setValue("messages-total", s.messages_total, fmtInt(s.messages_total));
    setValue("throughput", rate, `${fmtNum(rate)} msg/s`);
    setValue("queue-depth", s.queue_depth, fmtInt(s.queue_depth));
    setValue("tokens", s.tokens_used, fmtInt(s.tokens_used));
    setValue("cost", s.cost, fmtNum(s.cost, 4));
    $("latency").textContent = `${fmtMs(s.latency_ms.p50)} / ${fmtMs(s.latency_ms.p99)} ms`;
    const rejected = Object.values(s.rejections).reduce((a, b) => a + b, 0);
    $("failures").textContent = `${fmtInt(s.messages.failed || 0)} / ${fmtInt(rejected)}`;

    fill("endpoints", s.endpoints.map(endpointRow));
    const decisions = s.decisions.slice(0, MAX_DECISIONS);
    fill("decisions", decisions.map(decisionRow));
    $("decisions-empty").hidden = decisions.length > 0;
    fill("budgets", s.budgets.map(budgetRow));
    $("budgets-empty").hidden = s.budgets.length > 0;
    drawCharts();
  }

  function fill(tableId, rows) {
    $(tableId).tBodies[0].replaceChildren(...rows);
  }

  function cell(content, className) {
    const td = document.createElement("td");
    if (content instanceof Node) td.append(content);
    else td.textContent = content;
    if (className) td.className = className;
    return td;
  }

  function meter(value, max) {
    const m = document.createElement("meter");
    m.min = 0;
    m.max = Math.max(max, 1);
    m.value = value;
    return m;
  }

  function endpointRow(e) {
    const tr = document.createElement("tr");
    tr.dataset.endpoint = e.endpoint_id;
    tr.dataset.health = e.health;
    const state = e.circuit_open ? "circuit-open" : e.health;
    const badge = document.createElement("span");
    badge.className = `badge ${state}`;
    badge.textContent = e.circuit_open ? "circuit open" : e.health;
    const load = document.createElement("span");
    load.className = "load";
    load.append(meter(e.current_load, e.capacity), ` ${e.current_load} / ${e.capacity}`);
    tr.append(
      cell(e.endpoint_id, "id"),
      cell(e.group || "–"),
      cell(badge),
      cell(load, "num"),
      cell(fmtMs(e.latency_p99_ms), "num"),
      cell(fmtPct(e.error_rate), "num"),
      cell(fmtNum(e.cost_per_1k_tokens, 4), "num"),
      cell(fmtInt(e.requests), "num"),
      cell(fmtInt(e.failures), "num"),
    );
    return tr;
  }

  function decisionRow(d) {
    const tr = document.createElement("tr");
    tr.dataset.messageId = d.message_id;
    tr.dataset.target = d.target_endpoint;
    tr.title = d.reason;
    const score = d.score_breakdown;
    tr.append(
      cell(fmtTime(d.at_ms)),
      cell(d.agent_id, "id"),
      cell(d.group || "–"),
      cell(d.target_endpoint, "id"),
      cell(fmtNum(score.cost_score, 3), "num score-cost"),
      cell(fmtNum(score.load_score, 3), "num score-load"),
      cell(fmtNum(score.latency_score, 3), "num score-latency"),
      cell(fmtNum(score.total_score, 3), "num score-total"),
      cell(d.fallback_endpoints.join(", ") || "–"),
    );
    return tr;
  }

  function budgetRow(b) {
    const tr = document.createElement("tr");
    tr.dataset.agent = b.agent_id;
    tr.append(
      cell(b.agent_id, "id"),
      cell(fmtInt(b.limit), "num"),
      cell(fmtInt(b.used), "num budget-used"),
      cell(fmtInt(b.reserved), "num"),
      cell(fmtInt(b.remaining), "num"),
      cell(meter(b.remaining, b.limit)),
    );
    return tr;
  }

  // -- charts --------------------------------------------------------------------

  // The smallest 1, 2, 4 or 8 times a power of ten that is >= v: an axis top
  // whose quarters (the grid lines) are round numbers.
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    return [1, 2, 4, 8, 10].map((m) => m * p).find((n) => n >= v * (1 - 1e-9));
  }

  // series: [{color, value: (sample) => number|null, bars?}]. A bar spans the
  // interval its value was measured over (a rate); a line joins point values.
  function drawChart(canvas, series) {
    // Sized in CSS pixels, drawn at device resolution so lines stay sharp.
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);

    const pad = { left: 46, right: 10, top: 8, bottom: 20 };
    const now = samples.length ? samples[samples.length - 1].t : Date.now();
    const start = now - WINDOW_MS;
    const values = series.flatMap((s) => samples.map(s.value).filter((v) => v != null));
    const top = niceCeil(Math.max(0, ...values));
    const x = (t) => pad.left + ((t - start) / WINDOW_MS) * (w - pad.left - pad.right);
    const y = (v) => h - pad.bottom - (v / top) * (h - pad.top - pad.bottom);

    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.strokeStyle = COLORS.grid;
    ctx.fillStyle = COLORS.text;
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      const gy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.left, gy);
      ctx.lineTo(w - pad.right, gy);
      ctx.stroke();
      ctx.textAlign = "right";
      ctx.fillText(String(Number(v.toFixed(2))), pad.left - 6, gy + 4);
    }
    ctx.textAlign = "left";
    ctx.fillText("−2 min", pad.left, h - 5);
    ctx.textAlign = "right";
    ctx.fillText("now", w - pad.right, h - 5);

    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      if (s.bars) {
        for (const sample of samples) {
          const v = s.value(sample);
          if (v == null || v <= 0) continue;
          const left = Math.max(pad.left, x(sample.t0));
          // At least 2 px wide, so a burst between two polls stays visible.
          ctx.fillRect(left, y(v), Math.max(2, x(sample.t) - left - 1), y(0) - y(v));
        }
        continue;
      }
      ctx.beginPath();
      let drawing = false;
      for (const sample of samples) {
        const v = s.value(sample);
        if (v == null) {
          drawing = false; // a gap, not a drop to zero
          continue;
        }
        if (drawing) ctx.lineTo(x(sample.t), y(v));
        else ctx.moveTo(x(sample.t), y(v));
        drawing = true;
      }
      ctx.stroke();
      // Mark the newest value: a lone first sample has no line to show it.
      const last = samples.length ? s.value(samples[samples.length - 1]) : null;
      if (last != null) {
        ctx.beginPath();
        ctx.arc(x(now), y(last), 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
  }

  function drawCharts() {
    const throughput = $("throughput-chart");
    drawChart(throughput, [{ color: COLORS.rate, value: (s) => s.rate, bars: true }]);
    // Exposed for tests and for anyone reading the DOM: the window's peak rate.
    const peak = Math.max(0, ...samples.map((s) => s.rate ?? 0));
    throughput.dataset.peak = String(peak);
    throughput.dataset.points = String(samples.length);
    const latency = $("latency-chart");
    drawChart(latency, [
      { color: COLORS.p50, value: (s) => s.p50 },
      { color: COLORS.p99, value: (s) => s.p99 },
    ]);
    latency.dataset.points = String(samples.length);
  }

  window.addEventListener("resize", drawCharts);
  loop();
})();

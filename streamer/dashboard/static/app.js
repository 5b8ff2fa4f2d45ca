// The dashboard page: one WebSocket to the server it came from, frames in, DOM and charts out.
// Frames carry only what is new for this page (the first one, and every one after a
// reconnect, is the whole state); see streamer/dashboard/state.py for their shape.
"use strict";

(function () {
  const COLORS = ["#16a34a", "#2563eb", "#d97706", "#dc2626", "#7c3aed", "#0891b2"];
  // the tracker's regime names (streamer.market.model), calm to wild; others by index
  const NAMED = {
    quiet: "#0891b2", calm: "#16a34a", normal: "#2563eb", turbulent: "#d97706", crisis: "#dc2626",
  };
  const color = (names, i) => NAMED[names[i]] || COLORS[i % COLORS.length];
  const STALE_MS = 3000; // no frame for this long: the server (or the path to it) is gone
  const MAX_POINTS = 5000;
  const MAX_LAGS = 2000;

  // what tests and the benchmark read: frames received, and how far behind the prices were
  const dash = { frames: 0, snapshots: 0, lags: [], lastFrame: 0, connected: false };
  window.dashboard = dash;

  const $ = (id) => document.getElementById(id);
  const symbols = new Map(); // name -> {el, chart, points, ...}
  const streams = new Map(); // name -> [word, ...] newest last
  let lastWord = null;
  let ws = null;
  let serverConnected = false;

  function fmt(x, digits) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
  }

  function setConnection() {
    const fresh = Date.now() - dash.lastFrame < STALE_MS;
    const ok = serverConnected && fresh && ws !== null && ws.readyState === WebSocket.OPEN;
    dash.connected = ok;
    const el = $("connection");
    const text = ok ? "connected" : "stale";
    if (el.textContent !== text) {
      el.textContent = text;
      el.className = "badge " + text;
    }
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(proto + "://" + location.host + "/ws");
    ws.onmessage = (ev) => onFrame(JSON.parse(ev.data));
    ws.onclose = () => {
      ws = null;
      serverConnected = false; // "connected" again only once the new connection sends a frame
      setConnection();
      setTimeout(connect, 1000); // the next frame after reconnecting is a snapshot
    };
  }

  function onFrame(f) {
    dash.frames += 1;
    dash.lastFrame = Date.now();
    if (f.snapshot) {
      dash.snapshots += 1;
      reset();
    }
    const h = f.health;
    serverConnected = h.connected;
    $("heartbeat-age").textContent = h.heartbeat_age === null ? "never" : fmt(h.heartbeat_age, 1) + " s";
    $("lost").textContent = String(h.lost);
    $("lost").title = `seq gaps seen: ${h.missed}; dropped by the publisher: ${h.dropped}; ` +
      `invalid: ${h.invalid}; reconnects: ${h.reconnects}`;
    $("subscribers").textContent = h.subscribers === null ? "–" : String(h.subscribers);
    // tick time to publish: meaningful for live ticks only (the server leaves it out otherwise)
    $("lag").textContent = h.decode_ms === null ? "–" : fmt(h.decode_ms, 0) + " ms";
    $("lag").title = h.lag_ms === null ? "" : `latest decode published ${fmt(h.lag_ms, 0)} ms ago`;
    $("service-state").textContent = h.state || "–";
    $("browsers").textContent = `${h.browsers} (${h.browsers_dropped} dropped)`;
    renderLevels(h.levels || {});
    for (const w of f.words) addWord(w);
    if (f.words.length) renderWords();
    const nowS = Date.now() / 1000;
    for (const [name, d] of Object.entries(f.symbols)) {
      const s = symbols.get(name);
      const fresh = !f.snapshot && s !== undefined && s.ts !== d.ts;
      updateSymbol(name, d);
      // how far behind the last publish the price shown is (fresh prices only)
      if (fresh && dash.lags.length < MAX_LAGS) dash.lags.push(nowS - d.ts);
    }
    setConnection();
  }

  // the audio level of each capture stream (microphone or replayed file): RMS dBFS, peak on hover
  function renderLevels(levels) {
    const el = $("mic-level");
    const names = Object.keys(levels).sort();
    const text = names.length === 0 ? "–" : names.map((n) => {
      const [rms] = levels[n];
      return (names.length > 1 ? n.split("/").pop() + " " : "") + fmt(rms, 1) + " dBFS";
    }).join(" · ");
    if (el.textContent !== text) el.textContent = text;
    el.title = names.map((n) => `${n}: RMS ${fmt(levels[n][0], 1)} dBFS, peak ${fmt(levels[n][1], 1)} dBFS`)
      .join("\n");
    el.dataset.levels = JSON.stringify(levels);
  }

  function reset() {
    streams.clear();
    lastWord = null;
    for (const s of symbols.values()) s.points = [];
  }

  // -- words ----------------------------------------------------------------------------------

  function addWord(w) {
    let list = streams.get(w.stream);
    if (!list) streams.set(w.stream, (list = []));
    list.push(w);
    if (list.length > 20) list.shift();
    lastWord = w;
  }

  function label(w) {
    return w.label === null ? "not a known word" : w.label;
  }

  function nbest(w) {
    return w.nbest.map((n) => `${n.label} ${n.loglik.toFixed(1)}`).join("\n") || "no n-best";
  }

  function renderWords() {
    if (lastWord) {
      const el = $("last-word");
      el.textContent = label(lastWord);
      el.className = "label" + (lastWord.label === null ? " unknown" : "");
      el.title = nbest(lastWord);
      $("last-confidence").textContent = "confidence " + lastWord.confidence.toFixed(2);
      $("last-stream").textContent = `${lastWord.stream.split("/").pop()} #${lastWord.utterance} · ` +
        new Date(lastWord.ts * 1000).toLocaleTimeString();
    }
    const root = $("streams");
    root.replaceChildren();
    for (const [name, list] of streams) {
      const h = document.createElement("h3");
      h.textContent = name.split("/").pop(); // a file's stream name is its path
      h.title = name;
      const table = document.createElement("table");
      for (const w of list.slice().reverse()) {
        const tr = table.insertRow();
        tr.title = nbest(w);
        const c1 = tr.insertCell();
        c1.textContent = label(w);
        if (w.label === null) c1.className = "unknown";
        tr.insertCell().textContent = w.confidence.toFixed(2);
        tr.insertCell().textContent = `${w.start.toFixed(2)}–${w.end.toFixed(2)} s`;
        tr.insertCell().textContent = new Date(w.ts * 1000).toLocaleTimeString();
      }
      root.append(h, table);
    }
  }

  // -- prices ---------------------------------------------------------------------------------

  function makeSymbol(name) {
    const el = document.createElement("div");
    el.className = "symbol";
    el.dataset.symbol = name;
    const title = document.createElement("div");
    title.className = "title";
    const h = document.createElement("h3");
    h.textContent = name;
    const price = document.createElement("span");
    price.className = "price";
    price.dataset.testid = "price-" + name;
    const regime = document.createElement("span");
    regime.className = "regime";
    regime.dataset.testid = "regime-" + name;
    title.append(h, price, regime);
    const chart = document.createElement("div");
    chart.dataset.testid = "chart-" + name;
    chart.dataset.points = "0";
    const probs = document.createElement("div");
    probs.className = "probs";
    probs.dataset.testid = "probs-" + name;
    el.append(title, chart, probs);
    $("symbols").append(el);
    const s = { el, price, regime, chartEl: chart, probs, chart: null, k: 0, names: "", points: [], ts: 0 };
    symbols.set(name, s);
    return s;
  }

  function makeChart(s, names) {
    if (s.chart) s.chart.destroy();
    const series = [{}];
    names.forEach((n, i) => {
      series.push({ label: n, stroke: color(names, i), width: 1.5, spanGaps: false });
    });
    const opts = {
      width: Math.max(300, s.chartEl.clientWidth || 600),
      height: 180,
      series,
      legend: { show: false },
      scales: { x: { time: true } },
      axes: [{}, { size: 70 }],
      cursor: { drag: { x: false, y: false } },
    };
    s.k = names.length;
    s.chart = new uPlot(opts, chartData(s), s.chartEl);
  }

  // one series per regime: the price where that regime held, joined to the point before it
  function chartData(s) {
    const n = s.points.length;
    const xs = new Array(n);
    const ys = [];
    for (let k = 0; k < s.k; k++) ys.push(new Array(n).fill(null));
    for (let i = 0; i < n; i++) {
      const p = s.points[i];
      xs[i] = p[0];
      const k = p[5];
      if (k < s.k) {
        ys[k][i] = p[4];
        if (i > 0) ys[k][i - 1] = s.points[i - 1][4];
      }
    }
    return [xs, ...ys];
  }

  function updateSymbol(name, d) {
    const s = symbols.get(name) || makeSymbol(name);
    if (d.reset) s.points = [];
    if (d.points) {
      for (const p of d.points) s.points.push(p);
      if (s.points.length > MAX_POINTS) s.points.splice(0, s.points.length - MAX_POINTS);
    }
    s.ts = d.ts;
    s.price.textContent = fmt(d.price, 4);
    s.regime.textContent = d.regime;
    s.regime.style.background = color(d.names, d.state);
    s.el.dataset.state = String(d.state);
    const names = d.names;
    const key = names.join(",");
    if (!s.chart || s.names !== key) {
      s.names = key;
      makeChart(s, names);
    }
    else if (d.points && d.points.length) s.chart.setData(chartData(s));
    s.chartEl.dataset.points = String(s.points.length);
    renderProbs(s, names, d.probs);
  }

  function renderProbs(s, names, probs) {
    if (s.probs.children.length !== probs.length) {
      s.probs.replaceChildren();
      probs.forEach((_, i) => {
        const el = document.createElement("span");
        el.className = "prob";
        const n = document.createElement("span");
        const bar = document.createElement("span");
        bar.className = "bar";
        bar.append(document.createElement("i"));
        const v = document.createElement("span");
        el.append(n, bar, v);
        s.probs.append(el);
      });
    }
    probs.forEach((p, i) => {
      const el = s.probs.children[i];
      el.dataset.name = names[i];
      el.dataset.prob = String(p);
      el.children[0].textContent = names[i];
      el.children[1].firstChild.style.width = (100 * p).toFixed(1) + "%";
      el.children[1].firstChild.style.background = color(names, i);
      el.children[2].textContent = p.toFixed(3);
    });
  }

  window.addEventListener("resize", () => {
    for (const s of symbols.values()) {
      if (s.chart) s.chart.setSize({ width: Math.max(300, s.chartEl.clientWidth), height: 180 });
    }
  });
  setInterval(setConnection, 250);
  connect();
})();

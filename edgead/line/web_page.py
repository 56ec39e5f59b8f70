"""The line view's one page: plain HTML, CSS and script, no external files (the line has no internet)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__ line view</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{margin:0;font:14px system-ui,sans-serif;background:#15171a;color:#e8e8e8}
 header{padding:8px 14px;background:#22262b;display:flex;gap:18px;align-items:baseline}
 header h1{font-size:17px;margin:0} .ok{color:#4cc864} .bad{color:#ff5a4e}
 main{display:grid;grid-template-columns:minmax(0,3fr) minmax(260px,2fr);gap:12px;padding:12px}
 #live{width:100%;background:#000;border-radius:4px;image-rendering:pixelated}
 .card{background:#22262b;border-radius:4px;padding:10px;margin-bottom:12px}
 .nums{display:grid;grid-template-columns:repeat(3,1fr);gap:8px} .nums b{display:block;font-size:22px}
 canvas{width:100%;height:160px;background:#101214;border-radius:4px}
 #gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
 #gallery figure{margin:0;background:#101214;border-radius:4px;padding:4px;font-size:12px}
 #gallery img{width:49%;} small{color:#9aa}
</style></head>
<body>
<header><h1>__TITLE__</h1><span id="verdict">waiting for frames</span><small id="judged"></small>
<small id="uptime"></small><button id="pause">pause</button><button id="reset">reset counts</button></header>
<main>
 <section><img id="live" alt="live annotated frame"></section>
 <section>
  <div class="card nums">
   <div>frames<b id="frames">0</b></div><div>anomalies<b id="anomalies">0</b></div><div>fps<b id="fps">0</b></div>
   <div>latency p50<b id="p50">-</b></div><div>p90<b id="p90">-</b></div><div>p99<b id="p99">-</b></div>
  </div>
  <div class="card" id="line" hidden>parts <b id="parts">0</b> · rejected <b id="rejected_parts">0</b> ·
   yield <b id="yield">-</b> · events <b id="events">0</b><div id="connections"></div></div>
  <div class="card">score over time <small>(normalised: the threshold is the dashed line at 0.5)</small>
   <canvas id="chart" width="600" height="160"></canvas>
   <div style="display:flex;justify-content:space-between"><small id="t0"></small><small id="t1"></small></div></div>
 </section>
</main>
<section class="card" style="margin:0 12px 12px"><div>latest anomalies <small>(overlay, map)</small></div>
 <div id="gallery"></div></section>
<script>
const q = location.search;
const url = (p) => p + q;
document.getElementById("live").src = url("stream.mjpg");
function draw(scores, threshold) {
  const c = document.getElementById("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const top = Math.max(1, ...scores.map(s => s[1])), y = v => c.height - 4 - (c.height - 8) * v / top;
  g.setLineDash([6, 4]); g.strokeStyle = "#d9b44a"; g.beginPath();
  g.moveTo(0, y(threshold)); g.lineTo(c.width, y(threshold)); g.stroke(); g.setLineDash([]);
  g.strokeStyle = "#6fb3ff"; g.beginPath();
  scores.forEach((s, i) => { const x = c.width * i / Math.max(1, scores.length - 1);
                             i ? g.lineTo(x, y(s[1])) : g.moveTo(x, y(s[1])); });
  g.stroke();
  g.fillStyle = "#ff5a4e";
  scores.forEach((s, i) => { if (s[2]) g.fillRect(c.width * i / Math.max(1, scores.length - 1) - 2, y(s[1]) - 2, 4, 4); });
}
let shown = "", paused = false, base = {};
const counted = ["frames", "anomalies", "parts", "rejected_parts", "events"];
document.getElementById("pause").onclick = (e) => { paused = !paused; e.target.textContent = paused ? "resume" : "pause"; };
document.getElementById("reset").onclick = () => { base = {...latest}; };  // this page's counts only
let latest = {};
async function tick() {
  if (paused) return;
  try {
    const s = await (await fetch(url("stats.json"), {cache: "no-store"})).json();
    latest = {...s};
    for (const k of counted) s[k] -= (base[k] || 0);
    for (const k of ["frames", "anomalies", "fps"]) document.getElementById(k).textContent = s[k];
    document.getElementById("judged").textContent = s.bundle_id ?
      `${s.source || ""} · bundle ${s.bundle_id} · threshold ${s.raw_threshold}` : "";
    if (s.scores.length) {
      const t = (x) => new Date(x * 1000).toLocaleTimeString();
      document.getElementById("t0").textContent = t(s.scores[0][0]);
      document.getElementById("t1").textContent = t(s.scores[s.scores.length - 1][0]);
    }
    for (const k of ["p50", "p90", "p99"]) document.getElementById(k).textContent = s.latency_ms[k] + " ms";
    document.getElementById("uptime").textContent = "up " + Math.round(s.uptime_s) + " s";
    const conns = Object.entries(s.connections);
    document.getElementById("line").hidden = !(s.parts || s.events || conns.length);
    for (const k of ["parts", "rejected_parts", "events"]) document.getElementById(k).textContent = s[k];
    document.getElementById("yield").textContent =
      s.parts ? (100 * (1 - s.rejected_parts / s.parts)).toFixed(1) + "%" : "-";
    document.getElementById("connections").innerHTML = conns.map(([name, c]) =>
      `<span class="${c.connected ? "ok" : "bad"}">${name} ${c.connected ? "connected" : "DISCONNECTED"}</span> ` +
      `<small>queued ${c.queued}, dropped ${c.dropped}</small>`).join("<br>");
    const last = s.scores[s.scores.length - 1], v = document.getElementById("verdict");
    if (last) { v.textContent = (last[2] ? "ANOMALY " : "OK ") + last[1].toFixed(2); v.className = last[2] ? "bad" : "ok"; }
    draw(s.scores, s.threshold);
    const ids = s.gallery.map(a => a.id).join(",");
    if (ids !== shown) {
      shown = ids;
      document.getElementById("gallery").innerHTML = s.gallery.map(a =>
        `<figure data-id="${a.id}"><img src="${url("gallery/" + a.id + "/overlay.jpg")}" alt="overlay">` +
        `<img src="${url("gallery/" + a.id + "/map.jpg")}" alt="map"><figcaption>frame ${a.frame} · ` +
        `${new Date(a.time * 1000).toLocaleTimeString()} · score ${a.score.toPrecision(4)}</figcaption></figure>`).join("");
    }
  } catch (e) { document.getElementById("verdict").textContent = "stream ended"; }
}
setInterval(tick, 500); tick();
</script></body></html>
"""

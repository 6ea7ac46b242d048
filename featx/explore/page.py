"""The map as one self-contained HTML page: a canvas scatter, no CDN, no server.

The points and their fields sit in `<script type="application/json" id="featx-map">`
({"meta": {...}, "points": [{"path", "x", "y", "label", "split", ...}, ...]}), so a notebook or
a test reads them back with one json.loads. The script colours the points by any field the
meta lists, shows a point's thumbnail and fields on hover, keeps them on click, zooms with the
wheel and pans by dragging. It writes what it drew into #status, and any script error there too.
"""

from __future__ import annotations

import html
import json

STYLE = """body{font-family:sans-serif;margin:1em}#wrap{display:flex;gap:1em;align-items:flex-start}
canvas{border:1px solid #ccc;cursor:crosshair}#side{min-width:240px;max-width:320px}
#tip{font-size:0.85em;word-break:break-all}#tip img{image-rendering:pixelated;width:128px;border:1px solid #ddd}
#legend div{font-size:0.85em;white-space:nowrap}#legend span{display:inline-block;width:10px;height:10px;margin-right:4px}
.note{color:#555;font-size:0.85em}"""

SCRIPT = r"""
(function () {
  const status = document.getElementById('status');
  window.addEventListener('error', e => { status.textContent = 'script error: ' + e.message; status.dataset.error = '1'; });
  const data = JSON.parse(document.getElementById('featx-map').textContent);
  const pts = data.points, fields = data.meta.colour_by;
  const palette = ['#1f77b4','#ff7f0e','#2ca02c','#d62728','#9467bd','#8c564b','#e377c2','#17becf',
    '#bcbd22','#7f7f7f','#aec7e8','#ffbb78','#98df8a','#ff9896','#c5b0d5','#c49c94','#f7b6d2','#9edae5'];
  const canvas = document.getElementById('map'), ctx = canvas.getContext('2d');
  const select = document.getElementById('colour'), legend = document.getElementById('legend');
  const tip = document.getElementById('tip');
  let view = {scale: 1, dx: 0, dy: 0}, pinned = null, colours = {};
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;  // no spread: 50k arguments overflow
  pts.forEach(p => { x0 = Math.min(x0, p.x); x1 = Math.max(x1, p.x); y0 = Math.min(y0, p.y); y1 = Math.max(y1, p.y); });
  const pad = 20, w = canvas.width - 2 * pad, h = canvas.height - 2 * pad;
  const sx = p => pad + ((p.x - x0) / ((x1 - x0) || 1) * w) * view.scale + view.dx;
  const sy = p => pad + ((y1 - p.y) / ((y1 - y0) || 1) * h) * view.scale + view.dy;
  fields.forEach(f => { const o = document.createElement('option'); o.value = f; o.textContent = f; select.appendChild(o); });
  function value(p, f) { const v = p[f]; return (v === undefined || v === null || v === '') ? '(none)' : String(v); }
  function recolour() {
    const f = select.value, counts = {};
    pts.forEach(p => { const v = value(p, f); counts[v] = (counts[v] || 0) + 1; });
    const keys = Object.keys(counts).sort();
    colours = {};
    keys.forEach((k, i) => { colours[k] = k === '(none)' ? '#d0d0d0' : palette[i % palette.length]; });
    legend.innerHTML = '';
    keys.forEach(k => { const d = document.createElement('div'); const s = document.createElement('span');
      s.style.background = colours[k]; d.appendChild(s); d.appendChild(document.createTextNode(k + ' (' + counts[k] + ')'));
      legend.appendChild(d); });
    draw();
  }
  function draw() {
    const f = select.value;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const r = pts.length > 20000 ? 1.5 : 2.5;
    pts.forEach(p => { ctx.fillStyle = colours[value(p, f)]; ctx.fillRect(sx(p) - r, sy(p) - r, 2 * r, 2 * r); });
    if (pinned) { ctx.strokeStyle = '#000'; ctx.lineWidth = 2; ctx.strokeRect(sx(pinned) - 5, sy(pinned) - 5, 10, 10); }
    status.textContent = 'drawn ' + pts.length + ' points, coloured by ' + f;
  }
  function nearest(ev) {
    const b = canvas.getBoundingClientRect(), mx = ev.clientX - b.left, my = ev.clientY - b.top;
    let best = null, bd = 64;
    pts.forEach(p => { const d = (sx(p) - mx) ** 2 + (sy(p) - my) ** 2; if (d < bd) { bd = d; best = p; } });
    return best;
  }
  function show(p) {
    tip.innerHTML = '';
    if (!p) return;
    if (p.thumb) { const img = document.createElement('img'); img.src = p.thumb; tip.appendChild(img); }
    ['path', 'label', 'split', 'predicted', 'probability', 'correct', 'finding'].forEach(k => {
      if (p[k] === undefined) return;
      const d = document.createElement('div'); d.textContent = k + ': ' + p[k]; tip.appendChild(d); });
  }
  let drag = null;
  canvas.addEventListener('mousemove', ev => {
    if (drag) { view.dx += ev.clientX - drag.x; view.dy += ev.clientY - drag.y; drag = {x: ev.clientX, y: ev.clientY, moved: true}; draw(); return; }
    if (!pinned) show(nearest(ev));
  });
  canvas.addEventListener('mousedown', ev => { drag = {x: ev.clientX, y: ev.clientY, moved: false}; });
  canvas.addEventListener('mouseup', ev => {
    const moved = drag && drag.moved; drag = null;
    if (moved) return;
    const p = nearest(ev); pinned = (p && p !== pinned) ? p : null; show(pinned || p); draw();
  });
  canvas.addEventListener('wheel', ev => {
    ev.preventDefault();
    const b = canvas.getBoundingClientRect(), mx = ev.clientX - b.left, my = ev.clientY - b.top;
    const k = ev.deltaY < 0 ? 1.25 : 0.8;
    view.dx = mx - (mx - view.dx) * k; view.dy = my - (my - view.dy) * k; view.scale *= k; draw();
  }, {passive: false});
  select.addEventListener('change', recolour);
  document.getElementById('reset').addEventListener('click', () => { view = {scale: 1, dx: 0, dy: 0}; draw(); });
  recolour();
})();
"""


def _json_for_script(value) -> str:
    """JSON that cannot end its <script> element early."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "<\\!--")


def render(meta: dict, points: list[dict]) -> str:
    """The page for `points` (each with x, y and its fields); `meta` lists `colour_by` and notes."""
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in meta.get("notes", []))
    title = html.escape(meta.get("title", "featx map"))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style>"
            f"</head><body><h1>{title}</h1><p class='note'>{html.escape(meta.get('method', ''))}</p>{notes}"
            "<div id='wrap'><canvas id='map' width='900' height='700'></canvas><div id='side'>"
            "<label>colour by <select id='colour'></select></label> <button id='reset'>reset view</button>"
            "<p id='status'>loading</p><div id='legend'></div><hr><div id='tip'>hover a point; click keeps it</div>"
            "</div></div>"
            f"<script type='application/json' id='featx-map'>{_json_for_script({'meta': meta, 'points': points})}"
            f"</script><script>{SCRIPT}</script></body></html>")

// The dataflow graph as SVG: one box per vertex in columns by topological
// depth, edges labelled with their ship strategy, boxes coloured by back
// pressure (OK green, LOW amber, HIGH red).
import { s, count } from './dom.js';

const W = 210, H = 96, GX = 90, GY = 28, PAD = 16;

// nodes: the plan's nodes ({id, description, parallelism, inputs}); info:
// vertex id → {name, parallelism, status, in, out}; bp: vertex id → level.
export function graph(nodes, info, bp, bottleneck) {
  const depth = {};
  const byId = Object.fromEntries(nodes.map(n => [n.id, n]));
  const d = id => {
    if (depth[id] !== undefined) return depth[id];
    depth[id] = 0;
    const ins = (byId[id] && byId[id].inputs) || [];
    depth[id] = ins.length ? 1 + Math.max(...ins.map(i => d(i.id))) : 0;
    return depth[id];
  };
  nodes.forEach(n => d(n.id));
  const cols = [];
  for (const n of nodes) (cols[depth[n.id]] ||= []).push(n);
  const pos = {};
  cols.forEach((col, x) => col.forEach((n, y) => { pos[n.id] = { x: PAD + x * (W + GX), y: PAD + y * (H + GY) }; }));
  const width = PAD * 2 + cols.length * W + (cols.length - 1) * GX;
  const height = PAD * 2 + Math.max(...cols.map(c => c.length)) * (H + GY) - GY;

  const svg = s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'Dataflow graph' },
    s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' },
      s('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#6b7280' }))));
  for (const n of nodes) {
    for (const inp of n.inputs || []) {
      const a = pos[inp.id], b = pos[n.id];
      if (!a || !b) continue;
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      svg.append(s('path', { class: 'edge', d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, 'marker-end': 'url(#arrow)' }));
      const label = inp.ship_strategy + (inp.key ? `(${inp.key})` : '');
      svg.append(s('text', { class: 'elabel', x: mx, y: (y1 + y2) / 2 - 6, 'text-anchor': 'middle', 'data-edge': `${inp.id}->${n.id}` }, label));
    }
  }
  for (const n of nodes) {
    const p = pos[n.id], v = info[n.id] || {};
    const level = (bp[n.id] || 'unknown').toLowerCase();
    const g = s('g', { transform: `translate(${p.x},${p.y})`, 'data-vertex': n.id, 'data-bp': level },
      s('title', {}, `${v.name || n.description}: back pressure ${level.toUpperCase()}`),
      s('rect', { class: `box bp-box-${level}`, width: W, height: H, rx: 6 }),
      s('text', { class: 'vname', x: 10, y: 20 }, clip(v.name || n.description || n.id, 26)),
      s('text', { x: 10, y: 40 }, `parallelism ${v.parallelism ?? n.parallelism} · ${v.status || '–'}`),
      s('text', { x: 10, y: 60 }, `in ${count(v.in)} · out ${count(v.out)}`),
      s('text', { class: `bptag-${level}`, x: 10, y: 82, 'font-weight': 700 },
        `back pressure ${level === 'unknown' ? '–' : level.toUpperCase()}${bottleneck === n.id ? ' · bottleneck' : ''}`));
    svg.append(g);
  }
  return svg;
}

function clip(t, n) { return t.length > n ? t.slice(0, n - 1) + '…' : t; }

// Tiny DOM helpers: every value goes in as text, never as HTML.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) { el.replaceChildren(); append(el, children); }

export function badge(text, cls) { return h('span', { class: `badge ${cls}` }, text); }

export function table(headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('table', {},
    h('thead', {}, h('tr', {}, headers.map(hd => h('th', { scope: 'col', class: hd.num ? 'num' : '' }, hd.label ?? hd)))),
    h('tbody', {}, rows.map(r => h('tr', {}, r.map((c, i) => h('td', { class: headers[i] && headers[i].num ? 'num' : '' }, c))))));
}

export function message(text, error = false) {
  return h('p', { class: error ? 'msg error' : 'msg', role: error ? 'alert' : 'status' }, text);
}

export function time(ms) {
  if (!ms || ms < 0) return '–';
  return new Date(ms).toLocaleString(undefined, { hour12: false });
}

export function duration(ms) {
  if (ms === undefined || ms === null || ms < 0) return '–';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const hr = Math.floor(m / 60);
  return hr < 24 ? `${hr}h ${m % 60}m` : `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

export function count(n) {
  if (n === undefined || n === null) return '–';
  return Number(n).toLocaleString('en-US');
}

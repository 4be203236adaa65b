// The dashboard shell: fragment routes, the refresh loop, the leader banner
// and the token prompt.
import { api, status, setToken, token, ApiError } from './api.js';
import { h, replace, message } from './dom.js';
import * as cluster from './cluster.js';
import * as jobs from './jobs.js';
import * as job from './job.js';

const main = document.getElementById('main');
const banner = document.getElementById('banner');
const served = document.getElementById('served-by');

const ctx = {
  config: { 'refresh-interval': 3000, features: {} },
  leader: null, // the last /cluster/leader answer, null while there is none
  refresh: () => tick(),
  go: hash => { location.hash = hash; },
};

let page = null; // { key, view }
let timer = 0;
let running = null;
let needToken = false;

status.onNode = node => { served.textContent = `served by ${node}`; served.dataset.node = node; };
status.onUnauthorized = () => { needToken = true; };

// takeToken moves a token from the fragment (#token=T, #/jobs/<id>?token=T)
// into sessionStorage and the cookie, and removes it from the address bar.
function takeToken() {
  const m = location.hash.match(/[#?&]token=([^&]*)/);
  if (!m) return;
  setToken(decodeURIComponent(m[1]));
  let rest = location.hash.replace(/([#?&])token=[^&]*&?/, '$1').replace(/[?&]$/, '');
  if (rest === '#' || rest === '') rest = '#/jobs';
  history.replaceState(null, '', location.pathname + location.search + rest);
}

function route() {
  const path = location.hash.replace(/^#/, '').split('?')[0] || '/jobs';
  const parts = path.split('/').filter(Boolean);
  if (parts[0] === 'cluster') return { key: 'cluster', mod: cluster, params: {} };
  if (parts[0] === 'jobs' && parts[1]) return { key: 'job:' + parts[1], mod: job, params: { id: parts[1] } };
  return { key: 'jobs', mod: jobs, params: {} };
}

function showBanner(text, error = false) {
  banner.textContent = text;
  banner.className = error ? 'banner error' : 'banner';
  banner.hidden = false;
}

async function checkLeader() {
  try {
    ctx.leader = await api('/cluster/leader');
    banner.hidden = true;
  } catch (e) {
    if (e.code === 503) {
      ctx.leader = null;
      showBanner('Leader election in progress: showing this node\'s last replicated state; actions wait for the new leader.');
    } else if (e.code === 0) {
      showBanner(e.message + ' Retrying…', true);
    } else if (e.code !== 401) {
      showBanner(e.message, true);
    }
  }
}

function showLogin() {
  page = null;
  const input = h('input', { id: 'token-input', type: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', {
    class: 'panel', onsubmit: ev => {
      ev.preventDefault(); setToken(input.value); needToken = false;
      api('/config').then(c => { ctx.config = c; }).catch(() => {}).finally(render);
    },
  }, h('h1', {}, 'Sign in'),
  token() ? message('The API answered 401: the stored token was not accepted.', true) : h('p', {}, 'This cluster requires its API token.'),
  h('div', { class: 'row' }, h('label', { for: 'token-input' }, 'API token'), input, h('button', { type: 'submit' }, 'Sign in')));
  replace(main, form);
  input.focus();
}

async function tick() {
  clearTimeout(timer);
  if (running) return running;
  running = (async () => {
    try {
      if (needToken) { showLogin(); return; }
      await checkLeader();
      if (needToken) { showLogin(); return; }
      if (page) {
        try { await page.view.refresh(); } catch (e) {
          if (e instanceof ApiError && e.code === 401) { showLogin(); return; }
          console.error(e);
        }
      }
    } finally {
      running = null;
      timer = setTimeout(tick, Math.max(500, Number(ctx.config['refresh-interval']) || 3000));
    }
  })();
  return running;
}

function render() {
  takeToken();
  const r = route();
  for (const a of document.querySelectorAll('[data-nav]')) {
    const on = r.key === a.dataset.nav || (a.dataset.nav === 'jobs' && r.key.startsWith('job:'));
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (!page || page.key !== r.key) {
    if (page && page.view.unmount) page.view.unmount();
    replace(main);
    page = { key: r.key, view: r.mod.mount(main, r.params, ctx) };
    main.focus({ preventScroll: true }); // keyboard and screen-reader users start on the new page
  }
  tick();
}

async function start() {
  takeToken();
  sessionStorage.removeItem('dispatcher_login_tried');
  try { ctx.config = await api('/config'); } catch (e) { if (e.code === 401) needToken = true; }
  window.addEventListener('hashchange', render);
  render();
}

start();

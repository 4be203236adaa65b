// Job detail: summary, actions, the dataflow graph and the tabs (subtasks,
// back pressure, checkpoints, exceptions, configuration, accumulators).
import { api, optional, ApiError } from './api.js';
import { h, replace, badge, table, message, time, duration, count } from './dom.js';
import { graph } from './graph.js';

const TERMINAL = ['FINISHED', 'CANCELED', 'FAILED'];
const TABS = [
  ['subtasks', 'Subtasks'], ['backpressure', 'Back pressure'], ['checkpoints', 'Checkpoints'],
  ['exceptions', 'Exceptions'], ['configuration', 'Configuration'], ['accumulators', 'Accumulators'],
];
const NOT_AVAILABLE = 'not available on this server';

export function mount(main, { id }, ctx) {
  const title = h('h1', { id: 'job-name' }, 'Job ' + id);
  const summary = h('div', { class: 'panel', 'aria-label': 'Summary' });
  const out = h('div', { 'aria-live': 'polite', id: 'action-result' });
  const graphBox = h('div', { class: 'graph', id: 'graph' }, h('p', { class: 'empty' }, 'Loading the graph…'));
  const panel = h('div', { class: 'tabpanel', role: 'tabpanel', id: 'tabpanel' });
  let tab = 'subtasks';
  let details = null;
  let bottleneck = null;

  const cancel = h('button', { class: 'danger', id: 'cancel-job', type: 'button', onclick: () => { confirmBox.hidden = false; yes.focus(); } }, 'Cancel job');
  const yes = h('button', { class: 'danger', id: 'confirm-cancel', type: 'button', onclick: doCancel }, 'Yes, cancel the job');
  const no = h('button', { class: 'secondary', type: 'button', onclick: () => { confirmBox.hidden = true; cancel.focus(); } }, 'Keep it running');
  const confirmBox = h('span', { class: 'actions', hidden: true }, 'Cancel this job?', yes, no);
  const stop = h('button', { type: 'button', id: 'stop-job', onclick: () => savepoint(`/jobs/${id}/stop`, { drain: false }, 'Stop with savepoint') }, 'Stop with savepoint');
  const trigger = h('button', { type: 'button', id: 'trigger-savepoint', onclick: () => savepoint(`/jobs/${id}/savepoints`, { 'cancel-job': false }, 'Savepoint') }, 'Trigger savepoint');
  const vsel = h('select', { id: 'rescale-vertex' });
  const scale = h('input', { id: 'rescale-to', type: 'number', min: 1, value: 1, style: 'width:5rem' });
  const rescale = h('button', { type: 'button', id: 'rescale', onclick: doRescale }, 'Rescale');
  const actions = h('div', { class: 'panel' },
    h('div', { class: 'actions' }, cancel, confirmBox, stop, trigger,
      h('span', { class: 'actions' }, h('label', { for: 'rescale-vertex' }, 'Vertex'), vsel,
        h('label', { for: 'rescale-to' }, 'to'), scale, rescale)), out);

  const tabButtons = TABS.map(([key, label]) => h('button', {
    type: 'button', role: 'tab', id: 'tab-' + key, 'aria-controls': 'tabpanel', 'aria-selected': key === tab ? 'true' : 'false',
    onclick: () => { tab = key; for (const b of tabButtons) b.setAttribute('aria-selected', b.id === 'tab-' + key ? 'true' : 'false'); replace(panel, h('p', { class: 'muted' }, 'Loading…')); loadTab(); },
  }, label));

  main.append(h('p', {}, h('a', { href: '#/jobs' }, '← all jobs')), title, summary, actions,
    h('h2', {}, 'Dataflow'), h('p', { class: 'legend' }, 'Border colour is back pressure: green OK (ratio ≤ 0.10), amber LOW (≤ 0.5), red HIGH (> 0.5).'),
    graphBox, h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Job details' }, tabButtons), panel);

  function say(text, error = false) { replace(out, message(text, error)); }
  function explain(what, e) {
    if (e instanceof ApiError && e.missing) return `${what}: ${NOT_AVAILABLE}.`;
    return `${what} failed: ${e.message}`;
  }

  async function doCancel() {
    confirmBox.hidden = true;
    try { await api(`/jobs/${id}?mode=cancel`, { method: 'PATCH' }); say('Cancellation requested.'); } catch (e) { say(explain('Cancel', e), true); }
    ctx.refresh();
  }

  async function savepoint(path, body, what) {
    let r;
    try { r = await api(path, { method: 'POST', body }); } catch (e) { say(explain(what, e), true); return; }
    await track(what, r);
  }

  // track follows an asynchronous operation (Flink's {"request-id"}) on
  // GET /jobs/:id/savepoints/:triggerid until it completes or fails.
  async function track(what, r) {
    const trig = r && (r['request-id'] || r.triggerid || r['trigger-id']);
    if (!trig) { say(`${what} requested.`); ctx.refresh(); return; }
    say(`${what} in progress (trigger ${trig})…`);
    for (let i = 0; i < 300; i++) {
      await new Promise(res => setTimeout(res, 1000));
      let st;
      try { st = await api(`/jobs/${id}/savepoints/${trig}`); } catch (e) {
        if (e.code === 503 || e.code === 0) continue;
        say(explain(`${what} status`, e), true); return;
      }
      const sid = st && st.status && st.status.id;
      if (sid === 'COMPLETED') {
        const op = st.operation || {};
        const cause = op['failure-cause'] || op.failureCause;
        if (cause) say(`${what} failed: ${cause['stack-trace'] || cause.class || 'unknown cause'}`, true);
        else say(`${what} completed${op.location ? ': ' + op.location : ''}.`);
        ctx.refresh();
        return;
      }
      if (sid && sid !== 'IN_PROGRESS') { say(`${what}: ${sid}.`, true); return; }
    }
    say(`${what}: still in progress after 5 minutes.`, true);
  }

  async function doRescale() {
    const n = Number(scale.value);
    if (!vsel.value || !(n >= 1)) { say('Choose a vertex and a parallelism of at least 1.', true); return; }
    let r;
    try {
      r = await api(`/jobs/${id}/vertices/${encodeURIComponent(vsel.value)}/parallelism`, { method: 'PUT', body: { new_scale: n } });
    } catch (e) { say(explain('Rescale', e), true); return; }
    await track(`Rescale of ${vsel.value} to ${n}`, r);
  }

  async function refresh() {
    // The first read goes through the leader, so a job just submitted
    // through another node is found at once.
    try { details = await api(`/jobs/${id}${details ? '' : '?consistent=true'}`); } catch (e) {
      replace(summary, message(e.code === 404 ? `No job ${id} on this cluster.` : e.message, true));
      return;
    }
    const d = details;
    document.title = `${d.name} · dispatcher`;
    title.textContent = d.name;
    replace(summary, h('dl', { class: 'kv' },
      h('dt', {}, 'State'), h('dd', {}, h('span', { id: 'job-state', class: `badge st-${d.state}` }, d.state), d.reason ? ` ${d.reason}` : ''),
      h('dt', {}, 'Job id'), h('dd', {}, h('code', {}, d.jid)),
      h('dt', {}, 'Started'), h('dd', {}, time(d['start-time'])),
      h('dt', {}, 'Duration'), h('dd', {}, duration(d.duration)),
      h('dt', {}, 'Attempt'), h('dd', {}, `${d.attempt ?? 1} (restarts: ${d.restarts ?? 0})`)));
    const terminal = TERMINAL.includes(d.state) || d.state === 'CANCELLING';
    const f = ctx.config.features || {};
    cancel.disabled = terminal || f['web-cancel'] === false;
    stop.disabled = terminal;
    trigger.disabled = terminal;
    rescale.disabled = terminal || f['web-rescale'] === false;
    if (!vsel.options.length) replace(vsel, d.vertices.map(v => h('option', { value: v.id }, v.id)));

    const plan = (d.plan && d.plan.nodes) ? d.plan : (await api(`/jobs/${id}/plan`)).plan;
    const info = {};
    for (const v of d.vertices) {
      info[v.id] = { name: v.name, parallelism: v.parallelism, status: v.status, in: v.metrics && v.metrics['read-records'], out: v.metrics && v.metrics['write-records'] };
    }
    const bp = {};
    bottleneck = null;
    if (!TERMINAL.includes(d.state)) {
      const job = await optional(`/jobs/${id}/backpressure`, null).catch(() => null);
      if (job && job.vertices) {
        for (const v of job.vertices) bp[v.id] = v.backpressureLevel;
        bottleneck = job.bottleneck;
      } else {
        await Promise.all(d.vertices.map(async v => {
          const r = await api(`/jobs/${id}/vertices/${v.id}/backpressure`).catch(() => null);
          if (r && r.backpressureLevel) bp[v.id] = r.backpressureLevel;
        }));
      }
    }
    replace(graphBox, graph(plan.nodes, info, bp, bottleneck && bottleneck.id));
    await loadTab();
  }

  async function loadTab() {
    if (!details) return;
    const which = tab;
    let content;
    try { content = await TAB_LOADERS[which](id, details, bottleneck); } catch (e) { content = message(e.message, true); }
    if (which === tab) replace(panel, content);
  }

  return { refresh };
}

const TAB_LOADERS = {
  async subtasks(id, d) {
    const vs = await Promise.all(d.vertices.map(v => api(`/jobs/${id}/vertices/${v.id}`)));
    const rows = [];
    for (const v of vs) {
      for (const st of v.subtasks || []) {
        const m = st.metrics || {};
        rows.push([v.id, st.subtask, badge(st.status, 'st-' + st.status), st['taskmanager-id'] || '–', st.endpoint,
          count(m['read-records']), count(m['write-records']), count(m['read-bytes']), count(m['write-bytes']), duration(st.duration), st.attempt]);
      }
    }
    return table(['Vertex', { label: 'Subtask', num: true }, 'State', 'Node', 'Endpoint', { label: 'Records in', num: true },
      { label: 'Records out', num: true }, { label: 'Bytes in', num: true }, { label: 'Bytes out', num: true }, 'Duration', { label: 'Attempt', num: true }],
    rows, 'No subtasks yet.');
  },

  async backpressure(id, d, bottleneck) {
    if (TERMINAL.includes(d.state)) return h('p', { class: 'empty' }, `The job is ${d.state}: back pressure is only measured while it runs.`);
    const results = await Promise.all(d.vertices.map(v => api(`/jobs/${id}/vertices/${v.id}/backpressure`).then(r => [v, r], e => [v, e])));
    const rows = [];
    let sampling = false;
    for (const [v, r] of results) {
      if (r instanceof Error) { rows.push([v.id, message(r.message, true), '', '', '']); continue; }
      if (r.status === 'deprecated') {
        sampling = true;
        rows.push([v.id, h('span', { class: 'sampling' }, 'Sampling in progress…'), '–', '–', '–']);
        continue;
      }
      if (r.sampling) sampling = true;
      const max = Math.max(...(r.subtasks || []).map(st => st.ratio), 0);
      rows.push([v.id,
        h('span', {}, badge((r.backpressureLevel || '?').toUpperCase(), 'bp-' + r.backpressureLevel), r.sampling ? h('span', { class: 'muted sampling' }, ' sampling in progress…') : ''),
        max.toFixed(2),
        h('span', {}, (r.subtasks || []).map(st => [badge(`${st.subtask}: ${st.ratio.toFixed(2)}`, 'bp-' + st.backpressureLevel), ' '])),
        time(r['end-timestamp'])]);
    }
    return h('div', {},
      sampling ? message('Sampling in progress: the nodes that run the subtasks are taking stack samples (about 5 s); results appear on the next refresh.') : '',
      h('p', { class: 'muted' }, 'The ratio is the share of samples that found a subtask waiting for an output buffer: OK ≤ 0.10, LOW ≤ 0.5, HIGH > 0.5. A vertex shows its worst subtask. Samples are refreshed after the back-pressure refresh interval.'),
      table(['Vertex', 'Status', { label: 'Ratio', num: true }, 'Subtasks', 'Sampled at'], rows, 'No vertices.'),
      h('h3', {}, 'Likely bottleneck'),
      bottleneck ? h('p', { id: 'bottleneck' }, h('strong', {}, bottleneck.id), ': ', bottleneck.why) : h('p', { class: 'empty' }, 'None identified: the job keeps up, or samples are still being taken.'));
  },

  async checkpoints(id) {
    let c;
    try { c = await api(`/jobs/${id}/checkpoints`); } catch (e) {
      if (e.code === 404) return h('p', { class: 'empty' }, 'Checkpoints are not available on this server yet.');
      throw e;
    }
    const hist = (c && c.history) || [];
    const counts = (c && c.counts) || {};
    if (!hist.length && !counts.total) return h('p', { class: 'empty' }, 'No checkpoints yet: this job has not taken any.');
    return h('div', {},
      h('p', {}, Object.entries(counts).map(([k, v]) => `${k}: ${v}`).join(' · ')),
      table(['Id', 'Status', 'Triggered', 'Duration', { label: 'Size', num: true }, 'Savepoint'], hist.map(x => [
        x.id, badge(x.status, x.status === 'COMPLETED' ? 'st-RUNNING' : x.status === 'FAILED' ? 'st-FAILED' : 'st-CREATED'),
        time(x.trigger_timestamp), duration(x.end_to_end_duration), count(x.state_size ?? x.checkpointed_size), x.is_savepoint ? 'yes' : 'no']),
      'No checkpoints yet.'));
  },

  async exceptions(id) {
    const e = await api(`/jobs/${id}/exceptions`);
    const entries = (e.exceptionHistory && e.exceptionHistory.entries) || [];
    if (!entries.length) return h('p', { class: 'empty' }, 'No exceptions: this job has not failed.');
    return h('div', {}, entries.map(x => h('div', { class: 'panel' },
      h('p', {}, h('strong', {}, time(x.timestamp)), ' ', x.taskName || '(no task)', x.taskManagerId ? ` on ${x.taskManagerId}` : ''),
      h('pre', {}, x.stacktrace || x.exceptionName))));
  },

  async configuration(id) {
    const c = await api(`/jobs/${id}/config`);
    const ec = c['execution-config'] || {};
    const uc = ec['user-config'] || {};
    return h('div', {},
      table(['Key', 'Value'], Object.entries(ec).filter(([k]) => k !== 'user-config').map(([k, v]) => [k, String(v)]), 'No execution config.'),
      h('h3', {}, 'Parameters'),
      table(['Name', 'Value'], Object.entries(uc).map(([k, v]) => [k, String(v)]), 'No parameters.'),
      h('h3', {}, 'Spec'), h('pre', {}, JSON.stringify(c.spec, null, 2)));
  },

  async accumulators(id) {
    const a = await api(`/jobs/${id}/accumulators`);
    return table(['Name', 'Type', { label: 'Value', num: true }], (a['user-task-accumulators'] || []).map(x => [x.name, x.type, count(x.value)]),
      'No accumulators: this job\'s operators count nothing of their own.');
  },
};

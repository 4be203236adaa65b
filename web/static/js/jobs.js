// Jobs: the overview of every job and, when /config allows web submission,
// a form to upload a bundle and run one of its entries.
import { api } from './api.js';
import { h, replace, badge, table, message, time, duration } from './dom.js';

const STATES = ['running', 'pending', 'finished', 'canceling', 'canceled', 'failed'];

export function mount(main, _params, ctx) {
  const list = h('section', { 'aria-label': 'Jobs', class: 'block' });
  main.append(h('h1', {}, 'Jobs'), list);
  const submit = ctx.config.features && ctx.config.features['web-submit'];
  if (submit) main.append(submitForm(ctx));

  async function refresh() {
    let data;
    try { data = await api('/jobs/overview'); } catch (e) { replace(list, message(e.message, true)); return; }
    const rows = (data.jobs || []).map(j => [
      h('a', { href: `#/jobs/${j.jid}`, 'data-job': j.jid }, j.name),
      badge(j.state, 'st-' + j.state),
      time(j['start-time']),
      duration(j.duration),
      h('span', {}, STATES.filter(s => j.tasks && j.tasks[s]).map(s => [badge(`${j.tasks[s]} ${s}`, taskClass(s)), ' '])),
      h('code', {}, j.jid),
    ]);
    replace(list, table(['Name', 'State', 'Started', 'Duration', 'Tasks', 'Job id'], rows,
      submit ? 'No jobs yet: submit one below.' : 'No jobs yet: submit one with POST /v1/jobs or the CLI.'));
  }
  return { refresh };
}

function taskClass(s) {
  return { running: 'st-RUNNING', finished: 'st-FINISHED', failed: 'st-FAILED', canceled: 'st-CANCELED', canceling: 'st-CANCELLING' }[s] || 'st-CREATED';
}

function submitForm(ctx) {
  const file = h('input', { id: 'jar-file', type: 'file', accept: '.jar,.zip' });
  const jar = h('select', { id: 'jar-select' });
  const entry = h('select', { id: 'jar-entry' });
  const par = h('input', { id: 'run-parallelism', type: 'number', min: 1, placeholder: 'default', style: 'width:7rem' });
  const args = h('input', { id: 'run-args', type: 'text', placeholder: '--name value', style: 'width:14rem' });
  const savepoint = h('input', { id: 'run-savepoint', type: 'text', placeholder: 'none', style: 'width:14rem' });
  const out = h('div', { 'aria-live': 'polite' });
  let jars = [];

  function fillEntries() {
    const j = jars.find(x => x.id === jar.value);
    replace(entry, ((j && j.entry) || []).map(e => h('option', { value: e.name }, e.name)));
  }
  async function loadJars(select) {
    // After an upload, read through the leader: the answering node may not
    // have applied the new bundle yet.
    const data = await api(select ? '/jars?consistent=true' : '/jars');
    jars = data.files || [];
    replace(jar, jars.length ? jars.map(j => h('option', { value: j.id }, `${j.name} (${new Date(j.uploaded).toLocaleString()})`))
      : h('option', { value: '' }, 'no bundles uploaded yet'));
    if (select) jar.value = select;
    fillEntries();
  }
  jar.addEventListener('change', fillEntries);

  const upload = h('button', {
    type: 'button', id: 'jar-upload', onclick: async () => {
      if (!file.files.length) { replace(out, message('Choose a bundle (.jar or .zip) first.', true)); return; }
      const form = new FormData();
      form.append('jarfile', file.files[0]);
      try {
        const r = await api('/jars/upload', { method: 'POST', form });
        const id = r.filename.split('/').pop();
        await loadJars(id);
        replace(out, message(`Uploaded ${file.files[0].name}.`));
      } catch (e) { replace(out, message('Upload failed: ' + e.message, true)); }
    },
  }, 'Upload');

  const run = h('button', { type: 'submit', id: 'jar-run' }, 'Run');
  const form = h('form', {
    class: 'panel', 'aria-labelledby': 'submit-title', onsubmit: async ev => {
      ev.preventDefault();
      if (!jar.value) { replace(out, message('Upload a bundle first.', true)); return; }
      const body = { entryClass: entry.value || undefined };
      if (par.value) body.parallelism = Number(par.value);
      if (args.value.trim()) body.programArgs = args.value.trim();
      if (savepoint.value.trim()) body.savepointPath = savepoint.value.trim();
      try {
        const r = await api(`/jars/${encodeURIComponent(jar.value)}/run`, { method: 'POST', body });
        ctx.go(`#/jobs/${r.jobid}`);
      } catch (e) { replace(out, message('Run failed: ' + e.message, true)); }
    },
  },
  h('h2', { id: 'submit-title' }, 'Submit a job'),
  h('div', { class: 'row' }, h('label', { for: 'jar-file' }, 'Bundle'), file, upload),
  h('div', { class: 'row' }, h('label', { for: 'jar-select' }, 'Uploaded bundle'), jar,
    h('label', { for: 'jar-entry' }, 'Entry'), entry),
  h('div', { class: 'row' }, h('label', { for: 'run-parallelism' }, 'Parallelism'), par,
    h('label', { for: 'run-args' }, 'Program arguments'), args,
    h('label', { for: 'run-savepoint' }, 'Savepoint path'), savepoint, run),
  out);
  loadJars().catch(e => replace(out, message('Bundles: ' + e.message, true)));
  return form;
}

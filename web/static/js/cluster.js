// Cluster: the nodes (gossip state, Raft role and suffrage, slots, version),
// the leader and its term, and the Habitat census groups.
import { api, optional } from './api.js';
import { h, replace, badge, table, message, time, count } from './dom.js';

export function mount(main, _params, ctx) {
  const summary = h('section', { 'aria-label': 'Cluster summary' });
  const nodes = h('section', { 'aria-label': 'Nodes' });
  const census = h('section', { 'aria-label': 'Census' });
  main.append(h('h1', {}, 'Cluster'), summary, h('h2', {}, 'Nodes'), nodes, h('h2', {}, 'Census groups'), census);

  async function refresh() {
    const [members, tms, overview, cen] = await Promise.all([
      api('/cluster/members').catch(e => e),
      api('/taskmanagers').catch(() => null),
      api('/overview').catch(() => null),
      optional('/census', null).catch(e => e),
    ]);
    const leader = ctx.leader;
    replace(summary, h('div', { class: 'cards' },
      h('div', { class: 'card' }, h('div', { class: 'muted' }, 'Leader'),
        h('div', { class: 'v', id: 'leader' }, leader ? leader.id : 'none (election)')),
      h('div', { class: 'card' }, h('div', { class: 'muted' }, 'Term'), h('div', { class: 'v', id: 'term' }, leader ? leader.term : '–')),
      h('div', { class: 'card' }, h('div', { class: 'muted' }, 'Leader since'), h('div', {}, leader ? time(Date.parse(leader.since)) : '–')),
      overview && h('div', { class: 'card' }, h('div', { class: 'muted' }, 'Slots free / total'),
        h('div', { class: 'v' }, `${overview['slots-available']} / ${overview['slots-total']}`)),
      overview && h('div', { class: 'card' }, h('div', { class: 'muted' }, 'Jobs running'), h('div', { class: 'v' }, overview['jobs-running']))));

    if (members instanceof Error) { replace(nodes, message(members.message, true)); } else {
      const free = {};
      for (const tm of (tms && tms.taskmanagers) || []) free[tm.id] = tm.freeSlots;
      const rows = members.members.map(m => [
        h('span', { 'data-member': m.id }, m.id),
        badge(m.status, 'h-' + m.status),
        m.leader ? badge('leader', 'st-RUNNING') : (m.suffrage === 'voter' ? 'follower' : '–'),
        m.suffrage,
        m.http_address,
        m.version || '–',
        count(m.slots),
        free[m.id] === undefined ? '–' : count(m.slots - free[m.id]),
        free[m.id] === undefined ? '–' : count(free[m.id]),
        m.last_contact ? time(Date.parse(m.last_contact)) : '–',
      ]);
      replace(nodes, table(['Node', 'Gossip', 'Raft role', 'Suffrage', 'API address', 'Version',
        { label: 'Slots', num: true }, { label: 'Used', num: true }, { label: 'Free', num: true }, 'Last contact'], rows,
      'No members known yet.'));
    }

    if (cen instanceof Error) { replace(census, message('Census not available yet: ' + cen.message)); return; }
    if (!cen) { replace(census, h('p', { class: 'empty' }, 'The census is not available on this server.')); return; }
    const groups = Object.values(cen.census_groups || {});
    replace(census, table(['Service group', 'Leader', 'Incarnation', 'Population'], groups.map(g => [
      g.service_group, g.leader_id || '–', g.pkg_incarnation,
      h('span', {}, Object.values(g.population || {}).map(p => [
        badge(`${p.member_id} ${health(p)}`, 'h-' + health(p)), ' ']))]),
    'No census groups.'));
  }
  return { refresh };
}

function health(p) {
  if (p.departed) return 'departed';
  if (p.confirmed) return 'confirmed';
  if (p.suspect) return 'suspect';
  return p.alive ? 'alive' : 'unknown';
}

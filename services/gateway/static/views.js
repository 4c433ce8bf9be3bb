// How the dashboard draws what the API returns: node and assignment tables (rows
// kept by key and updated in place, so a refresh neither flickers nor replaces a
// button under the pointer), an agent's history with the balancer's reasons, and
// one line per live event. Text only through textContent: nothing from the API is
// ever parsed as HTML.

/** Creates `<tag>` with attributes (`class`, `data-*`, …; `true` for a bare one) and children. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    node.setAttribute(k, v === true ? '' : String(v));
  }
  node.append(...children.filter((c) => c !== undefined && c !== null));
  return node;
}

/** "12s ago", "3m ago", … from an RFC 3339 time. */
export function ago(at, now = Date.now()) {
  const t = Date.parse(at);
  if (Number.isNaN(t)) return '–';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** Local wall-clock time of an RFC 3339 time. */
export function clock(at) {
  const t = new Date(at);
  return Number.isNaN(t.getTime()) ? String(at ?? '') : t.toLocaleTimeString();
}

/**
 * Makes `tbody`'s rows match `items` in order: a row per key, created once by
 * `create(item)` and brought up to date by `update(row, item)`.
 */
function syncRows(tbody, items, keyOf, create, update) {
  const existing = new Map([...tbody.rows].map((r) => [r.dataset.key, r]));
  const keep = new Set();
  items.forEach((item, i) => {
    const key = keyOf(item);
    keep.add(key);
    let row = existing.get(key);
    if (!row) {
      row = create(item);
      row.dataset.key = key;
    }
    update(row, item);
    if (tbody.rows[i] !== row) tbody.insertBefore(row, tbody.rows[i] || null);
  });
  for (const [key, row] of existing) if (!keep.has(key)) row.remove();
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

const percent = (x) => `${Math.round(Math.max(0, x) * 100)}%`;

/** The nodes table. `actions.toggleDrain(node)` runs the row's button. */
export function renderNodes(tbody, nodes, actions) {
  syncRows(
    tbody,
    nodes,
    (n) => n.id,
    (n) => {
      const button = h('button', { type: 'button', 'data-testid': 'drain-button', class: 'small' });
      button.addEventListener('click', () => actions.toggleDrain(button.node));
      return h(
        'tr',
        { 'data-testid': 'node-row', 'data-node-id': n.id },
        h('td', { class: 'id' }, h('span', { 'data-testid': 'node-id' }, n.id), h('small', { class: 'host' })),
        h('td', {}, h('span', { class: 'badge', 'data-testid': 'node-status' })),
        h('td', {}, h('div', { class: 'bar' }, h('div', { class: 'fill' })), h('small', { 'data-testid': 'node-load' })),
        h('td', { 'data-testid': 'node-agents', class: 'num' }),
        h('td', { class: 'address' }),
        h('td', { class: 'seen' }),
        h('td', {}, button),
      );
    },
    (row, n) => {
      const [idCell, statusCell, loadCell, agentsCell, addressCell, seenCell, actionCell] = row.cells;
      row.dataset.status = n.status;
      setText(idCell.querySelector('.host'), n.hostname && n.hostname !== n.id ? n.hostname : '');
      const badge = statusCell.firstChild;
      badge.className = `badge status-${n.status}`;
      setText(badge, n.status);
      const load = Number(n.load) || 0;
      const fill = loadCell.querySelector('.fill');
      fill.style.width = percent(Math.min(1, load));
      fill.className = `fill ${load > 0.85 ? 'hot' : load > 0.6 ? 'warm' : ''}`;
      setText(loadCell.querySelector('small'), percent(load));
      loadCell.title = `cpu ${Math.round(n.cpu_usage)}%, memory ${Math.round(n.memory_usage)}%, ` +
        `disk ${Math.round(n.disk_usage)}%, load average ${Number(n.load_average).toFixed(2)}`;
      setText(agentsCell, `${n.active_agents}/${n.max_agents}`);
      agentsCell.classList.toggle('full', n.max_agents > 0 && n.active_agents >= n.max_agents);
      setText(addressCell, n.address || '');
      setText(seenCell, ago(n.last_seen));
      seenCell.title = n.last_seen || '';
      const button = actionCell.firstChild;
      button.node = n;
      const draining = n.draining || n.status === 'draining';
      setText(button, draining ? 'Undrain' : 'Drain');
      button.dataset.action = draining ? 'undrain' : 'drain';
      button.disabled = Boolean(actions.pending.has(n.id)) ||
        (!draining && (n.status === 'offline' || n.status === 'left'));
    },
  );
}

/** The assignments table; waiting agents (orphaned, migrating) stand out. */
export function renderAssignments(tbody, assignments, actions) {
  syncRows(
    tbody,
    assignments,
    (a) => a.agent_name,
    (a) => {
      const link = h('button', { type: 'button', class: 'link', 'data-testid': 'agent-link' }, a.agent_name);
      link.addEventListener('click', () => actions.select(a.agent_name));
      return h(
        'tr',
        { 'data-testid': 'assignment-row', 'data-agent': a.agent_name },
        h('td', {}, link),
        h('td', { 'data-testid': 'assignment-node' }),
        h('td', {}, h('span', { class: 'badge', 'data-testid': 'assignment-status' })),
        h('td', { class: 'seen' }),
        h('td', { class: 'num' }),
      );
    },
    (row, a) => {
      const [, nodeCell, statusCell, atCell, epochCell] = row.cells;
      const waiting = a.status !== 'running';
      row.dataset.node = a.node_id;
      row.dataset.status = a.status;
      row.classList.toggle('waiting', waiting);
      row.classList.toggle('selected', actions.selected === a.agent_name);
      setText(nodeCell, a.node_id || '–');
      const badge = statusCell.firstChild;
      badge.className = `badge assignment-${a.status}`;
      setText(badge, waiting ? `${a.status} · waiting` : a.status);
      setText(atCell, ago(a.assigned_at));
      atCell.title = a.assigned_at || '';
      setText(epochCell, String(a.epoch ?? ''));
    },
  );
}

/** "why this node": the strategy, and each candidate's score with the chosen one marked. */
function why(candidates) {
  if (!candidates || !Array.isArray(candidates.candidates)) return null;
  const n = candidates.candidates.length;
  const table = h('table', {},
    h('thead', {}, h('tr', {}, h('th', {}, 'candidate'), h('th', {}, 'score'))));
  const body = h('tbody');
  for (const c of candidates.candidates) {
    const chosen = c.node_id === candidates.chosen;
    body.append(h('tr', { class: chosen ? 'chosen' : undefined, 'data-testid': 'candidate', 'data-node-id': c.node_id },
      h('td', {}, c.node_id, chosen ? ' ✓' : ''),
      h('td', { class: 'num' }, Number(c.score).toFixed(3))));
  }
  table.append(body);
  return h('div', { class: 'why', 'data-testid': 'why' },
    h('p', {}, `why ${candidates.chosen || '?'}: ${candidates.strategy || 'the balancer'} chose it ` +
      `of ${n} candidate${n === 1 ? '' : 's'}`),
    table);
}

/** An agent's history, newest first. */
export function renderHistory(list, entries) {
  const rows = [...entries].sort((a, b) => (b.log_seq - a.log_seq) || (b.log_index - a.log_index));
  list.replaceChildren(...rows.map((e) => {
    let move = e.node_id || '';
    if (e.previous_node_id && e.previous_node_id !== e.node_id) {
      move = `${e.previous_node_id} → ${e.node_id || 'waiting for a node'}`;
    }
    return h('li', { 'data-testid': 'history-row', 'data-action': e.action },
      h('div', { class: 'line' },
        h('time', { datetime: e.at, title: e.at }, clock(e.at)), ' ',
        h('strong', {}, e.action), ' ', move,
        h('small', {}, ` term ${e.epoch}, by ${e.leader_id}`)),
      e.reason ? h('div', { class: 'reason' }, e.reason) : null,
      why(e.candidates));
  }));
  if (!rows.length) list.append(h('li', { class: 'empty' }, 'No history recorded for this agent.'));
}

/** One line for a live event: {text, level}. */
export function describeEvent(kind, e) {
  if (kind === 'registry') {
    const change = e.previous_status && e.previous_status !== e.status ? ` (${e.previous_status} → ${e.status})` : '';
    const level = ['offline', 'suspect', 'left', 'pruned'].includes(e.event) ? 'bad' : 'info';
    return { text: `node ${e.node_id} ${e.event}${change}${e.reason ? `: ${e.reason}` : ''}`, level };
  }
  if (kind === 'coordinator') {
    const where = e.previous_node_id && e.node_id ? `${e.previous_node_id} → ${e.node_id}` : (e.node_id || e.previous_node_id || '');
    const level = e.event === 'orphaned' ? 'bad' : 'info';
    return { text: `agent ${e.agent_name} ${e.event} ${where}${e.reason ? `: ${e.reason}` : ''}`, level };
  }
  if (kind === 'leader') {
    const l = e.leader;
    return {
      text: l ? `leader ${l.coordinator_id} (term ${l.epoch})${e.previous ? `, was ${e.previous}` : ''}` : 'no leader',
      level: l ? 'info' : 'bad',
    };
  }
  return { text: `${kind}: ${JSON.stringify(e)}`, level: 'info' };
}

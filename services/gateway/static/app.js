// The dashboard's behaviour: reads the gateway's REST API, keeps it current from
// the live event stream (/api/cluster/events, with a slow periodic refresh in case
// events are missed), draws the coordinator's throughput and latency from /metrics,
// and shows every API error on the page.

import { api, health, metricsText } from './api.js';
import { LineChart } from './charts.js';
import { METRICS, has, parse, quantileBetween, rate } from './metrics.js';
import { clock, describeEvent, h, renderAssignments, renderHistory, renderNodes } from './views.js';

/** The balancer's strategies, in the order the menu lists them. */
const STRATEGIES = ['round_robin', 'least_loaded', 'least_agents', 'random', 'weighted'];
/** Refresh everything this often even when events flow (they may be missed). */
const SLOW_REFRESH_MS = 10000;
/** Events arriving together trigger one refresh. */
const EVENT_DEBOUNCE_MS = 200;
const METRICS_POLL_MS = 3000;
/** Health is asked this often (the gateway answers from its last check), so a
 * crashed service shows within the gateway's 2 s. */
const HEALTH_POLL_MS = 500;
const CHART_POINTS = 60;
const MAX_EVENTS = 100;

const $ = (id) => document.getElementById(id);

const state = {
  nodes: [],
  assignments: [],
  selectedAgent: null,
  pendingNodes: new Set(),
};

// ---- errors ----------------------------------------------------------------

const errors = new Map();

/** Shows (or, with `null`, clears) the error of one source of data or one action. */
function setError(source, error) {
  if (error) {
    errors.set(source, error.message || String(error));
    console.warn(source, error);
  } else if (!errors.delete(source)) {
    return;
  }
  $('errors').replaceChildren(...[...errors].map(([key, message]) => {
    const close = h('button', { type: 'button', class: 'link', 'aria-label': 'dismiss' }, '×');
    close.addEventListener('click', () => setError(key, null));
    return h('li', { 'data-testid': 'error', 'data-source': key }, h('span', {}, message), close);
  }));
}

/** Runs `load`, recording its failure (or clearing the last one) under `source`. */
async function tracked(source, load) {
  try {
    const result = await load();
    setError(source, null);
    return result;
  } catch (e) {
    setError(source, e);
    return undefined;
  }
}

// ---- refreshing ------------------------------------------------------------

/**
 * A refresh that never runs twice at once: asked while running, it runs once more
 * afterwards, so the page ends up showing what was true after the last request.
 */
function refresher(run) {
  let running = null;
  let again = false;
  let timer = null;
  const now = async () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await run();
      } while (again);
    })();
    try {
      await running;
    } finally {
      running = null;
    }
  };
  now.soon = () => {
    if (timer === null) timer = setTimeout(() => { timer = null; now(); }, EVENT_DEBOUNCE_MS);
  };
  return now;
}

function summarise(list, truncated, noun) {
  return `${list.length}${truncated ? '+' : ''} ${noun}${list.length === 1 ? '' : 's'}`;
}

const refreshNodes = refresher(() => tracked('nodes', async () => {
  const { rows, truncated } = await api.nodes();
  state.nodes = rows.sort((a, b) => a.id.localeCompare(b.id));
  drawNodes();
  const byStatus = {};
  for (const n of rows) byStatus[n.status] = (byStatus[n.status] || 0) + 1;
  const parts = Object.entries(byStatus).map(([s, c]) => `${c} ${s}`).join(', ');
  $('node-summary').textContent = `${summarise(rows, truncated, 'node')}${parts ? ` — ${parts}` : ''}`;
}));

const refreshAssignments = refresher(() => tracked('assignments', async () => {
  const { rows, truncated } = await api.assignments();
  // Waiting agents first: they are the ones to look at.
  state.assignments = rows.sort((a, b) =>
    (a.status === 'running') - (b.status === 'running') || a.agent_name.localeCompare(b.agent_name));
  drawAssignments();
  const waiting = rows.filter((a) => a.status !== 'running').length;
  $('assignment-summary').textContent =
    `${summarise(rows, truncated, 'agent')}${waiting ? ` — ${waiting} waiting for a node` : ''}`;
}));

const refreshLeader = refresher(() => tracked('leader', async () => {
  try {
    showLeader((await api.leader()).leader);
  } catch (e) {
    // Between terms no coordinator leads: that is news, not a failure of the page.
    if (e.code !== 'not_leader') throw e;
    showLeader(null, e.message);
  }
}));

const refreshStrategy = refresher(() => tracked('strategy', async () => {
  showStrategy((await api.strategy()).strategy);
}));

const refreshHistory = refresher(async () => {
  const agent = state.selectedAgent;
  if (!agent) return;
  await tracked('history', async () => {
    const reply = await api.history(agent);
    if (state.selectedAgent === agent) renderHistory($('history-rows'), reply.history || []);
  });
});

function refreshAll() {
  refreshNodes();
  refreshAssignments();
  refreshLeader();
  refreshStrategy();
  refreshHistory();
}

// ---- drawing and actions ---------------------------------------------------

function drawNodes() {
  renderNodes($('nodes'), state.nodes, { pending: state.pendingNodes, toggleDrain });
  $('nodes-empty').hidden = state.nodes.length > 0;
}

function drawAssignments() {
  renderAssignments($('assignments'), state.assignments, { selected: state.selectedAgent, select: selectAgent });
  $('assignments-empty').hidden = state.assignments.length > 0;
}

/** Shows the leader (`{coordinator_id, epoch, since}`), or that there is none and why. */
function showLeader(leader, why) {
  const id = leader ? (leader.coordinator_id ?? leader.id) : null;
  $('leader').textContent = id ?? 'none';
  $('leader').classList.toggle('missing', !id);
  $('leader').title = id ? `leader since ${leader.since}` : (why || 'no coordinator leads');
  $('term').textContent = leader ? String(leader.epoch ?? leader.term) : '–';
}

function showStrategy(strategy) {
  const select = $('strategy');
  if (strategy && ![...select.options].some((o) => o.value === strategy)) {
    select.append(h('option', { value: strategy }, strategy));
  }
  select.value = strategy;
  select.dataset.current = strategy;
  select.disabled = false;
}

async function changeStrategy() {
  const select = $('strategy');
  const wanted = select.value;
  select.disabled = true;
  const reply = await tracked('set strategy', () => api.setStrategy(wanted));
  // On failure the menu goes back to what the balancer uses.
  showStrategy(reply ? reply.strategy || wanted : select.dataset.current);
}

async function toggleDrain(node) {
  const draining = node.draining || node.status === 'draining';
  state.pendingNodes.add(node.id);
  drawNodes();
  const updated = await tracked(`${draining ? 'undrain' : 'drain'} ${node.id}`,
    () => (draining ? api.undrain(node.id) : api.drain(node.id)));
  state.pendingNodes.delete(node.id);
  if (updated && updated.id) {
    state.nodes = state.nodes.map((n) => (n.id === updated.id ? updated : n));
  }
  drawNodes();
  refreshNodes.soon();
  refreshAssignments.soon();
}

function selectAgent(agent) {
  state.selectedAgent = agent;
  $('history').hidden = false;
  $('history-agent').textContent = agent;
  $('history-rows').replaceChildren(h('li', { class: 'empty' }, 'Loading…'));
  drawAssignments();
  refreshHistory();
}

function closeHistory() {
  state.selectedAgent = null;
  $('history').hidden = true;
  setError('history', null);
  drawAssignments();
}

// ---- live events -----------------------------------------------------------

function addEvent(kind, data) {
  const { text, level } = describeEvent(kind, data);
  const item = h('li', { 'data-testid': 'event', 'data-kind': kind, class: level },
    h('time', { datetime: data.at, title: data.at }, clock(data.at || new Date().toISOString())), h('span', { class: `kind kind-${kind}` }, kind), h('span', {}, text));
  const list = $('events');
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function onEvent(kind, message) {
  let data;
  try {
    data = JSON.parse(message.data);
  } catch {
    setError('events', new Error(`an unreadable ${kind} event: ${String(message.data).slice(0, 100)}`));
    return;
  }
  addEvent(kind, data);
  if (kind === 'registry') {
    // The event carries the node as it now is: show it at once, then re-read.
    const others = state.nodes.filter((n) => n.id !== data.node_id);
    if (data.event === 'pruned') {
      state.nodes = others;
    } else if (data.node) {
      state.nodes = [...others, data.node].sort((a, b) => a.id.localeCompare(b.id));
    }
    drawNodes();
    refreshNodes.soon();
  } else if (kind === 'coordinator') {
    refreshAssignments.soon();
    refreshNodes.soon();
    if (data.agent_name === state.selectedAgent) refreshHistory.soon();
  } else if (kind === 'leader') {
    showLeader(data.leader);
    refreshLeader.soon();
  }
}

/** After the stream is refused (the browser then gives up), try again this much later. */
const EVENTS_RETRY_MS = 5000;

function connectEvents() {
  const live = $('live');
  const source = api.events();
  source.addEventListener('open', () => {
    live.textContent = 'live';
    live.className = 'live open';
    setError('events', null);
    // Whatever happened while disconnected is read afresh.
    refreshAll();
  });
  source.addEventListener('error', () => {
    live.textContent = 'reconnecting';
    live.className = 'live down';
    setError('events', new Error('GET /api/cluster/events: the live event stream is down, reconnecting'));
    // The browser retries a dropped stream by itself, but not one it was refused.
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      setTimeout(connectEvents, EVENTS_RETRY_MS);
    }
  });
  for (const kind of ['registry', 'coordinator', 'leader']) {
    source.addEventListener(kind, (message) => onEvent(kind, message));
  }
}

// ---- metrics ---------------------------------------------------------------

function startMetrics() {
  const throughput = new LineChart($('chart-throughput'), {
    capacity: CHART_POINTS, span: `${(CHART_POINTS * METRICS_POLL_MS) / 60000} min`, format: (v) => v.toFixed(v < 10 ? 1 : 0),
  });
  const latency = new LineChart($('chart-latency'), {
    capacity: CHART_POINTS, span: `${(CHART_POINTS * METRICS_POLL_MS) / 60000} min`,
    format: (v) => (v < 1 ? `${(v * 1000).toFixed(v < 0.01 ? 1 : 0)} ms` : `${v.toFixed(2)} s`),
  });
  let previous = null;
  const note = (text) => {
    $('metrics-note').textContent = text;
    $('metrics-note').hidden = !text;
  };
  const poll = async () => {
    let text;
    try {
      text = await metricsText();
    } catch (e) {
      previous = null;
      $('charts').hidden = true;
      note(`Charts unavailable: ${e.message}`);
      return;
    }
    if (text === null) {
      previous = null;
      $('charts').hidden = true;
      note('Charts unavailable: this gateway serves no /metrics.');
      return;
    }
    const scrape = { at: performance.now(), samples: parse(text) };
    const missing = [METRICS.assigns, METRICS.assignLatency].filter((m) => !has(scrape.samples, m));
    $('chart-throughput').hidden = missing.includes(METRICS.assigns);
    $('chart-latency').hidden = missing.includes(METRICS.assignLatency);
    $('charts').hidden = missing.length === 2;
    note(missing.length ? `Not in /metrics yet: ${missing.join(', ')}.` : '');
    if (previous) {
      const seconds = (scrape.at - previous.at) / 1000;
      throughput.push(rate(previous.samples, scrape.samples, METRICS.assigns, seconds, METRICS.assignsLabels));
      latency.push(quantileBetween(previous.samples, scrape.samples, METRICS.assignLatency, METRICS.latencyQuantile));
    }
    previous = scrape;
  };
  poll();
  setInterval(poll, METRICS_POLL_MS);
}

// ---- health ----------------------------------------------------------------

/** Shows the control plane's health: `healthy`, or `unhealthy` and its problems. */
async function showHealth() {
  const report = await tracked('health', health);
  if (!report) return;
  const el = $('health');
  const problems = report.problems || [];
  el.dataset.status = report.status;
  el.className = `health ${report.status}`;
  el.textContent = problems.length ? `${report.status}: ${problems.join('; ')}` : report.status;
}

// ---- start -----------------------------------------------------------------

function start() {
  const select = $('strategy');
  select.replaceChildren(...STRATEGIES.map((s) => h('option', { value: s }, s.replace('_', ' '))));
  select.addEventListener('change', changeStrategy);
  $('history-close').addEventListener('click', closeHistory);
  refreshAll();
  connectEvents();
  setInterval(refreshAll, SLOW_REFRESH_MS);
  // "last seen" and "assigned" read as ages: keep them current between refreshes.
  setInterval(() => { drawNodes(); drawAssignments(); }, 1000);
  startMetrics();
  showHealth();
  setInterval(showHealth, HEALTH_POLL_MS);
}

start();

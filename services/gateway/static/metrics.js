// What the dashboard's charts read from /metrics (OpenMetrics text gathered from
// every service instance): the metric names, the text parser, and the rates and
// quantiles computed between two scrapes. Pure functions, no DOM.

/** The metrics the charts are drawn from; adjust here if the services rename them. */
export const METRICS = {
  /** Counter: assign requests answered (summed over every coordinator instance)… */
  assigns: 'shoal_coordinator_assigns_total',
  /** …of these only (a label absent from a sample does not exclude it). */
  assignsLabels: { outcome: 'ok' },
  /** Histogram, in seconds: how long an assign took (its `_bucket` series, by `le`). */
  assignLatency: 'shoal_coordinator_assign_duration_seconds',
  /** The quantile the latency chart shows. */
  latencyQuantile: 0.99,
};

/**
 * Parses OpenMetrics / Prometheus text into samples {name, labels, value}.
 * Comments (`# TYPE`, `# HELP`, `# EOF`) and malformed lines are skipped.
 */
export function parse(text) {
  const samples = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const sample = parseLine(line);
    if (sample) samples.push(sample);
  }
  return samples;
}

function parseLine(line) {
  const nameEnd = line.search(/[{\s]/);
  if (nameEnd <= 0) return null;
  const name = line.slice(0, nameEnd);
  const labels = {};
  let rest = line.slice(nameEnd);
  if (rest.startsWith('{')) {
    const end = parseLabels(rest, labels);
    if (end < 0) return null;
    rest = rest.slice(end + 1);
  }
  const value = parseValue(rest.trim().split(/\s+/)[0]);
  return Number.isNaN(value) ? null : { name, labels, value };
}

/** Reads `{k="v",...}` into `labels`; returns the index of the closing brace or -1. */
function parseLabels(text, labels) {
  let i = 1;
  while (i < text.length) {
    while (text[i] === ' ' || text[i] === ',') i++;
    if (text[i] === '}') return i;
    const eq = text.indexOf('=', i);
    if (eq < 0 || text[eq + 1] !== '"') return -1;
    const key = text.slice(i, eq).trim();
    let value = '';
    let j = eq + 2;
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === '\\' && j + 1 < text.length) {
        j++;
        value += text[j] === 'n' ? '\n' : text[j];
      } else {
        value += text[j];
      }
    }
    if (j >= text.length) return -1;
    labels[key] = value;
    i = j + 1;
  }
  return -1;
}

function parseValue(token) {
  if (token === '+Inf' || token === 'Inf') return Infinity;
  if (token === '-Inf') return -Infinity;
  if (token === undefined || token === '') return NaN;
  return Number(token);
}

/** A stable key for a label set, leaving out `omit`. */
function labelKey(labels, omit) {
  return Object.keys(labels)
    .filter((k) => k !== omit)
    .sort()
    .map((k) => `${k}=${labels[k]}`)
    .join(',');
}

/**
 * How much a counter grew from `before` to `after` (two value maps by series key).
 * A series whose value fell restarted from zero, so all of its value is new; a series
 * not seen before adds nothing (its past is unknown).
 */
function growth(before, after) {
  let total = 0;
  for (const [key, value] of after) {
    if (!before.has(key)) continue;
    const previous = before.get(key);
    total += value >= previous ? value - previous : value;
  }
  return total;
}

/** Whether a sample's labels agree with `wanted` wherever it has them. */
function matches(labels, wanted) {
  return Object.entries(wanted).every(([k, v]) => labels[k] === undefined || labels[k] === v);
}

/** The values of `name`'s series whose labels match `wanted`, by label set. */
function series(samples, name, wanted) {
  const out = new Map();
  for (const s of samples) {
    if (s.name === name && matches(s.labels, wanted)) out.set(labelKey(s.labels), s.value);
  }
  return out;
}

/** Per-second rate of counter `name` (its series matching `wanted`) between two scrapes `seconds` apart. */
export function rate(before, after, name, seconds, wanted = {}) {
  if (!(seconds > 0)) return null;
  return growth(series(before, name, wanted), series(after, name, wanted)) / seconds;
}

/**
 * The `q` quantile of histogram `name` over the observations made between two
 * scrapes (bucket growth summed over every instance), interpolated linearly inside
 * the bucket it falls in, as Prometheus' histogram_quantile does. `null` when
 * nothing was observed in between.
 */
export function quantileBetween(before, after, name, q) {
  const bucket = `${name}_bucket`;
  const byLe = new Map();
  const grew = (samples) => {
    const out = new Map();
    for (const s of samples) {
      if (s.name !== bucket || s.labels.le === undefined) continue;
      out.set(`${s.labels.le}|${labelKey(s.labels, 'le')}`, s.value);
    }
    return out;
  };
  const b = grew(before);
  const a = grew(after);
  for (const [key, value] of a) {
    const le = parseValue(key.slice(0, key.indexOf('|')));
    if (Number.isNaN(le)) continue;
    const one = growth(b, new Map([[key, value]]));
    byLe.set(le, (byLe.get(le) || 0) + one);
  }
  return quantile(byLe, q);
}

/** The `q` quantile from cumulative bucket counts (a Map le → count). */
export function quantile(cumulative, q) {
  const bounds = [...cumulative.keys()].sort((x, y) => x - y);
  if (!bounds.length || bounds[bounds.length - 1] !== Infinity) return null;
  const total = cumulative.get(Infinity);
  if (!(total > 0)) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const le of bounds) {
    const count = cumulative.get(le);
    if (count >= rank) {
      // Past the last finite bound all that is known is "more than it".
      if (le === Infinity) return bounds.length > 1 ? bounds[bounds.length - 2] : null;
      const inBucket = count - below;
      return inBucket > 0 ? lower + ((le - lower) * (rank - below)) / inBucket : le;
    }
    lower = le;
    below = count;
  }
  return null;
}

/** Whether the scrape has any sample of `name` (or of `name`'s histogram buckets). */
export function has(samples, name) {
  return samples.some((s) => s.name === name || s.name === `${name}_bucket`);
}

// Small line charts drawn as inline SVG (no chart library): a rolling window of
// points, the y axis from zero to a rounded maximum, gaps where a value is null.

const SVG_NS = 'http://www.w3.org/2000/svg';
const WIDTH = 320;
const HEIGHT = 100;
const LEFT = 46;
const TOP = 8;
const BOTTOM = 14;

function el(name, attrs, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** 1, 2 or 5 times a power of ten, at least `v` (the axis' top). */
export function niceCeiling(v) {
  if (!(v > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(v));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= v) return step * power;
  }
  return 10 * power;
}

/** A chart keeping the last `capacity` points, drawn into `figure`'s <svg>. */
export class LineChart {
  constructor(figure, { capacity = 60, format = (v) => v.toFixed(1), span = '' } = {}) {
    this.figure = figure;
    this.svg = figure.querySelector('svg');
    this.valueLabel = figure.querySelector('.value');
    this.capacity = capacity;
    this.format = format;
    this.span = span;
    this.points = [];
  }

  /** Adds a point (`null` for "nothing measured") and redraws. */
  push(value) {
    this.points.push(value);
    if (this.points.length > this.capacity) this.points.shift();
    this.draw();
  }

  draw() {
    const svg = this.svg;
    svg.replaceChildren();
    const values = this.points.filter((v) => v !== null && Number.isFinite(v));
    const top = niceCeiling(Math.max(0, ...values));
    const plotW = WIDTH - LEFT - 4;
    const plotH = HEIGHT - TOP - BOTTOM;
    const x = (i) => LEFT + (plotW * i) / Math.max(1, this.capacity - 1);
    const y = (v) => TOP + plotH - (plotH * v) / top;

    for (const frac of [0, 0.5, 1]) {
      const v = top * frac;
      svg.append(el('line', { x1: LEFT, x2: WIDTH - 4, y1: y(v), y2: y(v), class: 'grid' }));
      svg.append(el('text', { x: LEFT - 4, y: y(v) + 3, class: 'tick', 'text-anchor': 'end' }, this.format(v)));
    }
    svg.append(el('text', { x: LEFT, y: HEIGHT - 2, class: 'tick' }, this.span));
    svg.append(el('text', { x: WIDTH - 4, y: HEIGHT - 2, class: 'tick', 'text-anchor': 'end' }, 'now'));

    // Points are right-aligned: the newest is always at "now".
    const offset = this.capacity - this.points.length;
    let run = [];
    const flush = () => {
      if (run.length === 1) {
        const [px, py] = run[0];
        svg.append(el('circle', { cx: px, cy: py, r: 1.8, class: 'line-dot' }));
      } else if (run.length > 1) {
        svg.append(el('polyline', { points: run.map((p) => p.join(',')).join(' '), class: 'line' }));
      }
      run = [];
    };
    this.points.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) {
        flush();
      } else {
        run.push([x(offset + i).toFixed(1), y(v).toFixed(1)]);
      }
    });
    flush();

    // The latest value measured: an interval with nothing to measure (no assign, so
    // no latency) leaves the last one shown.
    const latest = values[values.length - 1];
    this.valueLabel.textContent = latest === undefined ? '–' : this.format(latest);
    this.figure.dataset.points = String(values.length);
  }
}

/* charts.js: the console's small SVG charts, drawn by hand (no library, no build step).
 *
 *   EtcdCharts.line(box, opts)      lines over days: several series, gaps where a value is null
 *   EtcdCharts.stacked(box, opts)   stacked bars over days
 *   EtcdCharts.bars(box, opts)      one bar per category (days, or histogram buckets)
 *   EtcdCharts.heatmap(box, opts)   rows x columns of shares in 0..1 (the retention triangle)
 *   EtcdCharts.legendList(list, series)  a legend as HTML that wraps (for charts of many series,
 *                                   drawn with opts.legend = false), swatches in SVG
 *   EtcdCharts.colors(n)            n distinct colours (PALETTE first, then more)
 *
 * Every mark carries its exact value in data-* attributes (data-value is String(number), the
 * shortest text that reads back as the same double), so a test can compare what was drawn with
 * the numbers the API returned. Null values are gaps: no mark, never a zero. The page's CSP allows
 * no style attributes, so colours are SVG presentation attributes (fill, stroke) or CSS classes.
 */
(function () {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";
  var W = 640;
  var PALETTE = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2"];
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) {
      if (attrs[k] !== undefined && attrs[k] !== null) node.setAttribute(k, String(attrs[k]));
    });
    if (parent) parent.appendChild(node);
    return node;
  }

  function label(parent, x, y, str, cls, anchor) {
    var t = el("text", {x: x, y: y, "class": cls || "tick", "text-anchor": anchor || "middle"}, parent);
    t.textContent = str;
    return t;
  }

  function tip(node, str) {
    el("title", {}, node).textContent = str;
  }

  function present(v) {
    return v !== null && v !== undefined && !(typeof v === "number" && isNaN(v));
  }

  /* "2026-11-20" -> "Nov 20", without Date (a day is a calendar date, not an instant). */
  function shortDay(day) {
    var p = String(day).split("-");
    return p.length === 3 ? MONTHS[Number(p[1]) - 1] + " " + Number(p[2]) : String(day);
  }

  function plain(v) {
    if (!present(v)) return "–";
    if (Math.abs(v) >= 10000) return (v / 1000).toFixed(v >= 100000 ? 0 : 1) + "k";
    return Number.isInteger(v) ? String(v) : v.toFixed(Math.abs(v) < 10 ? 2 : 1);
  }

  /* A share as a percentage: whole when it is whole (axis ticks), else one decimal. */
  function percent(v) {
    if (!present(v)) return "–";
    var p = 100 * v;
    return (Math.abs(p - Math.round(p)) < 1e-9 ? String(Math.round(p)) : p.toFixed(1)) + "%";
  }

  /* A heatmap cell's label: rounded to a whole percent, but a small non-zero share is not "0%". */
  function cellPercent(v) {
    var p = 100 * v;
    return (p > 0 && p < 1 ? p.toFixed(1) : p.toFixed(0)) + "%";
  }

  /* Seconds as the coarsest readable duration: 45s, 3m 20s, 1h 05m. */
  function duration(s) {
    if (!present(s)) return "–";
    s = Math.round(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60 ? " " + (s % 60) + "s" : "");
    var m = Math.round((s % 3600) / 60);
    return Math.floor(s / 3600) + "h" + (m ? " " + (m < 10 ? "0" : "") + m + "m" : "");
  }

  var DURATION_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600];

  /* A y axis from 0 with about four round steps (durations step in round seconds/minutes/hours). */
  function axis(max, steps) {
    if (!(max > 0)) max = 1;
    var raw = max / 4, step;
    if (steps) {
      step = steps[steps.length - 1];
      for (var i = 0; i < steps.length; i++) if (steps[i] >= raw) { step = steps[i]; break; }
    } else {
      var mag = Math.pow(10, Math.floor(Math.log10(raw))), n = raw / mag;
      step = (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * mag;
    }
    var top = Math.ceil(max / step - 1e-9) * step, ticks = [];
    for (var v = 0; v <= top + step / 2; v += step) ticks.push(v);
    return {max: top, ticks: ticks};
  }

  /* The frame shared by the charts over categories: svg, plot area, y grid and axis, x labels. */
  function frame(box, cats, opts, seriesForLegend) {
    box.textContent = "";
    var H = opts.height || 250;
    // The top margin holds the legend and the "not final yet" note; the right one half the last day's label.
    var m = {top: 30, right: 24, bottom: 30, left: 58};
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, "class": "chart-svg", role: "img",
      "aria-label": opts.title || ""}, box);
    var pw = W - m.left - m.right, ph = H - m.top - m.bottom;
    var band = pw / Math.max(cats.length, 1);
    var f = {svg: svg, m: m, pw: pw, ph: ph, band: band, H: H};
    f.x = function (i) { return m.left + (i + 0.5) * band; };
    var y = axis(opts.max, opts.steps);
    f.y = function (v) { return m.top + ph - (v / y.max) * ph; };

    // Days not final yet: a shaded band behind their columns, so their numbers read as provisional.
    var provisional = (opts.final || []).map(function (fin, i) { return fin === false ? i : -1; })
      .filter(function (i) { return i >= 0; });
    if (provisional.length) {
      var a = provisional[0], b = provisional[provisional.length - 1];
      var band_ = el("rect", {x: m.left + a * band, y: m.top, width: (b - a + 1) * band, height: ph,
        "class": "not-final-band", fill: "#fef3c7"}, svg);
      tip(band_, "not final yet: events may still arrive within the grace window");
      var note = label(svg, W - m.right, 14, "not final yet", "band-label", "end");
      el("rect", {x: W - m.right - textWidth(note, "not final yet") - 16, y: 5, width: 12, height: 10, rx: 2,
        fill: "#fef3c7", stroke: "#f59e0b", "stroke-width": 1}, svg);
    }

    var fmt = opts.yFormat || plain;
    y.ticks.forEach(function (v) {
      el("line", {x1: m.left, x2: m.left + pw, y1: f.y(v), y2: f.y(v), "class": "grid",
        stroke: v === 0 ? "#9ca3af" : "#e5e7eb"}, svg);
      label(svg, m.left - 6, f.y(v) + 4, fmt(v), "tick", "end");
    });

    // At most one label per ~56 px, counted back from the latest category so it is always labelled.
    var every = Math.max(1, Math.ceil(cats.length / Math.floor(pw / 56)));
    cats.forEach(function (c, i) {
      if ((cats.length - 1 - i) % every) return;
      label(svg, f.x(i), m.top + ph + 18, opts.catLabel ? opts.catLabel(c) : shortDay(c), "tick", "middle");
    });

    if (seriesForLegend.length > 1 && opts.legend !== false) legend(svg, seriesForLegend, m.left, 14);
    return f;
  }

  function legend(svg, series, x0, y0) {
    var x = x0;
    series.forEach(function (s, k) {
      var g = el("g", {"class": "legend-item", "data-series": s.key}, svg);
      el("rect", {x: x, y: y0 - 9, width: 12, height: 10, rx: 2, fill: s.color || PALETTE[k]}, g);
      var t = label(g, x + 16, y0, s.label, "legend", "start");
      x += 16 + textWidth(t, s.label) + 18;
    });
  }

  function textWidth(node, str) {
    try {
      var w = node.getComputedTextLength();
      if (w > 0) return w;
    } catch (e) { /* not laid out yet */ }
    return 6.6 * String(str).length;
  }

  function maxOf(series) {
    var max = 0;
    series.forEach(function (s) { s.values.forEach(function (v) { if (present(v) && v > max) max = v; }); });
    return max;
  }

  function anyValue(series) {
    return series.some(function (s) { return s.values.some(present); });
  }

  function empty(f, msg) {
    label(f.svg, f.m.left + f.pw / 2, f.m.top + f.ph / 2, msg || "no data in this range", "empty", "middle");
  }

  function finalAttr(opts, i) {
    var fin = (opts.final || [])[i];
    return fin === undefined || fin === null ? null : String(fin);
  }

  /* Lines: opts.days, opts.series [{key, label, values, color}], opts.final, opts.yFormat, opts.valueFormat,
     opts.legend (false: no legend in the SVG). */
  function line(box, opts) {
    var series = opts.series.map(function (s, k) { return Object.assign({color: PALETTE[k]}, s); });
    var f = frame(box, opts.days, Object.assign({max: maxOf(series)}, opts), series);
    if (!anyValue(series)) return empty(f);
    var vfmt = opts.valueFormat || opts.yFormat || plain;
    series.forEach(function (s) {
      // A path broken at every null: a day without a number is a gap in the line.
      var d = "", pen = false;
      s.values.forEach(function (v, i) {
        if (!present(v)) { pen = false; return; }
        d += (pen ? "L" : "M") + f.x(i).toFixed(1) + " " + f.y(v).toFixed(1);
        pen = true;
      });
      el("path", {d: d, "class": "line", "data-series": s.key, fill: "none", stroke: s.color, "stroke-width": 2,
        "stroke-linejoin": "round"}, f.svg);
    });
    series.forEach(function (s) {
      s.values.forEach(function (v, i) {
        if (!present(v)) return;
        var fin = finalAttr(opts, i);
        var c = el("circle", {cx: f.x(i).toFixed(1), cy: f.y(v).toFixed(1), r: opts.days.length > 45 ? 2.5 : 3.5,
          "class": "point" + (fin === "false" ? " provisional" : ""), fill: fin === "false" ? "#ffffff" : s.color,
          stroke: s.color, "stroke-width": 1.5, "data-series": s.key, "data-day": opts.days[i], "data-value": String(v),
          "data-final": fin}, f.svg);
        tip(c, opts.days[i] + " · " + s.label + " " + vfmt(v) + (fin === "false" ? " (not final yet)" : ""));
      });
    });
  }

  /* Stacked bars: same options as line; series stack bottom to top in their order. */
  function stacked(box, opts) {
    var series = opts.series.map(function (s, k) { return Object.assign({color: PALETTE[k]}, s); });
    var totals = opts.days.map(function (_, i) {
      return series.reduce(function (sum, s) { return sum + (present(s.values[i]) ? s.values[i] : 0); }, 0);
    });
    var f = frame(box, opts.days, Object.assign({max: Math.max.apply(null, totals.concat([0]))}, opts), series);
    if (!anyValue(series)) return empty(f);
    var bw = Math.max(2, f.band * 0.7), vfmt = opts.valueFormat || plain;
    opts.days.forEach(function (day, i) {
      var base = 0, fin = finalAttr(opts, i);
      series.forEach(function (s) {
        var v = s.values[i];
        if (!present(v)) return;
        var r = el("rect", {x: (f.x(i) - bw / 2).toFixed(1), y: f.y(base + v).toFixed(1), width: bw.toFixed(1),
          height: Math.max(0, f.y(base) - f.y(base + v)).toFixed(1), fill: s.color,
          "class": "bar-mark" + (fin === "false" ? " provisional" : ""), "fill-opacity": fin === "false" ? 0.55 : 1,
          "data-series": s.key, "data-day": day, "data-value": String(v), "data-final": fin}, f.svg);
        tip(r, day + " · " + s.label + " " + vfmt(v) + (fin === "false" ? " (not final yet)" : ""));
        base += v;
      });
    });
  }

  /* Bars: opts.categories, opts.values, opts.key (data-series), opts.attr ("day" or "bucket"),
     opts.valueLabels (print each value above its bar), opts.final, opts.catLabel. */
  function bars(box, opts) {
    var s = {key: opts.key, label: opts.label || opts.key, values: opts.values, color: opts.color || PALETTE[0]};
    var f = frame(box, opts.categories, Object.assign({max: maxOf([s])}, opts), [s]);
    if (!anyValue([s])) return empty(f);
    var bw = Math.max(2, f.band * (opts.valueLabels ? 0.6 : 0.7)), vfmt = opts.valueFormat || plain;
    opts.categories.forEach(function (c, i) {
      var v = s.values[i];
      if (!present(v)) return;
      var fin = finalAttr(opts, i), attrs = {x: (f.x(i) - bw / 2).toFixed(1), y: f.y(v).toFixed(1),
        width: bw.toFixed(1), height: Math.max(0, f.y(0) - f.y(v)).toFixed(1), fill: s.color,
        "class": "bar-mark" + (fin === "false" ? " provisional" : ""), "fill-opacity": fin === "false" ? 0.55 : 1,
        "data-series": s.key, "data-value": String(v), "data-final": fin};
      attrs["data-" + (opts.attr || "day")] = c;
      var r = el("rect", attrs, f.svg);
      tip(r, (opts.catLabel ? opts.catLabel(c) : c) + " · " + s.label + " " + vfmt(v) +
        (fin === "false" ? " (not final yet)" : ""));
      if (opts.valueLabels) label(f.svg, f.x(i), f.y(v) - 5, vfmt(v), "value-label", "middle");
    });
  }

  /* Light to dark blue; the square root spreads the small shares retention mostly has. */
  function heat(v) {
    var t = Math.sqrt(Math.max(0, Math.min(1, v)));
    var from = [239, 246, 255], to = [30, 58, 138];
    var c = from.map(function (a, k) { return Math.round(a + (to[k] - a) * t); });
    return {fill: "rgb(" + c.join(",") + ")", ink: t > 0.5 ? "ink-light" : "ink-dark"};
  }

  /* Heatmap: opts.table, opts.columns [N…], opts.rows [{key, label, size, values {N: share|null}}]. */
  function heatmap(box, opts) {
    box.textContent = "";
    var cols = opts.columns, rows = opts.rows;
    var m = {top: 26, right: 10, bottom: 8, left: 112}, ch = 22;
    var H = m.top + Math.max(rows.length, 1) * ch + m.bottom;
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, "class": "chart-svg heatmap", role: "img",
      "aria-label": opts.title || ""}, box);
    var cw = (W - m.left - m.right) / Math.max(cols.length, 1);
    label(svg, 8, m.top - 10, "cohort · size", "axis-title", "start");
    cols.forEach(function (n, j) { label(svg, m.left + (j + 0.5) * cw, m.top - 10, "D" + n, "tick", "middle"); });
    if (!rows.length) {
      label(svg, W / 2, m.top + 15, "no cohorts in this range yet", "empty", "middle");
      return;
    }
    rows.forEach(function (row, i) {
      var y = m.top + i * ch;
      label(svg, 8, y + ch / 2 + 4, shortDay(row.key) + " · " + row.size, "row-label", "start");
      cols.forEach(function (n, j) {
        var v = row.values[String(n)], x = m.left + j * cw;
        if (!present(v)) {
          // Not old enough yet (or not computed): an outline, distinct from a real 0%.
          el("rect", {x: x + 1.5, y: y + 1.5, width: cw - 3, height: ch - 3, "class": "gap", fill: "none",
            stroke: "#e5e7eb", "stroke-dasharray": "3 3", "data-table": opts.table, "data-cohort": row.key,
            "data-n": n}, svg);
          return;
        }
        var c = heat(v);
        var r = el("rect", {x: x + 1, y: y + 1, width: cw - 2, height: ch - 2, rx: 2, "class": "cell", fill: c.fill,
          "data-table": opts.table, "data-cohort": row.key, "data-n": n, "data-value": String(v)}, svg);
        tip(r, "cohort " + row.key + " (" + row.size + " devices), day " + n + ": " + (100 * v).toFixed(2) + "%");
        var t = label(svg, x + cw / 2, y + ch / 2 + 4, cellPercent(v), "cell-label", "middle");
        t.setAttribute("class", "cell-label " + c.ink);
        t.setAttribute("data-table", opts.table);
        t.setAttribute("data-cohort", row.key);
        t.setAttribute("data-n", n);
      });
    });
  }

  // Colours after PALETTE for charts of many series (breakdown values); they cycle past the end.
  var MORE = ["#db2777", "#65a30d", "#7c3aed", "#ea580c", "#0d9488", "#4f46e5", "#ca8a04", "#be123c", "#0369a1", "#15803d"];

  function colors(n) {
    var all = PALETTE.concat(MORE), out = [];
    for (var i = 0; i < n; i++) out.push(all[i % all.length]);
    return out;
  }

  /* A legend as an HTML list that wraps (an SVG legend is one line): series [{key, label, color}]. */
  function legendList(list, series) {
    list.textContent = "";
    series.forEach(function (s, k) {
      var li = document.createElement("li");
      li.setAttribute("data-series", s.key);
      var svg = el("svg", {width: 12, height: 10, viewBox: "0 0 12 10", "aria-hidden": "true", "class": "swatch"}, li);
      el("rect", {x: 0, y: 0, width: 12, height: 10, rx: 2, fill: s.color || PALETTE[k % PALETTE.length]}, svg);
      var name = document.createElement("span");
      name.textContent = s.label;
      li.appendChild(name);
      list.appendChild(li);
    });
  }

  window.EtcdCharts = {line: line, stacked: stacked, bars: bars, heatmap: heatmap, legendList: legendList, colors: colors,
    format: {plain: plain, percent: percent, duration: duration, shortDay: shortDay}, DURATION_STEPS: DURATION_STEPS};
})();

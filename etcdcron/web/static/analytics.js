/* analytics.js: the analytics page. Without an app it lists the apps (GET /api/v1/apps); with one it
 * fetches GET /api/v1/apps/{app}/report?days=N&by=B (the dict `etcdcron analytics report --by B --json`
 * prints) and draws it with charts.js. The numbers are drawn as the API gives them, never recomputed
 * here, so the page shows exactly what the CLI reports; the one sum is the breakdown chart's "other",
 * which adds the values beyond its colours to the API's "other".
 *
 * #analytics carries data-state (loading, drawn, error) and, once drawn, data-days, data-first,
 * data-last and data-by of the report it shows: a test waits on those rather than on time.
 */
(function () {
  "use strict";

  var C = window.EtcdCharts, F = C.format;
  var RANGES = ["7", "14", "30", "90"];
  var BYS = ["channel", "platform", "version"];
  var MAX_SERIES = 10;  // breakdown values the chart colours; the rest join "other"
  var MINUS = "\u2212", NNBSP = "\u202f";
  var root = document.getElementById("analytics");
  if (!root) return;
  var app = root.getAttribute("data-app");
  var seq = 0;

  function $(id) { return document.getElementById(id); }

  function showError(msg) {
    var box = $("analytics-error");
    box.textContent = msg;
    box.hidden = false;
    // Charts of an earlier range would be read as this one's: show the error alone.
    if ($("analytics-body")) $("analytics-body").hidden = true;
    root.setAttribute("data-state", "error");
  }

  /* GET an API path as JSON; a lapsed session goes back to the login page. */
  function getJSON(path) {
    return fetch("/api/v1" + path, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) {
        if (r.status === 401) {
          window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
          throw new Error("not logged in");
        }
        return r.json().catch(function () { return {error: "HTTP " + r.status}; }).then(function (body) {
          if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
          return body;
        });
      });
  }

  // --- the app chooser

  function chooser() {
    getJSON("/apps").then(function (body) {
      var list = $("app-list");
      list.textContent = "";
      body.apps.forEach(function (a) {
        var li = document.createElement("li");
        var link = document.createElement("a");
        link.href = "/analytics/" + encodeURIComponent(a.name);
        link.className = "app-link";
        link.setAttribute("data-app", a.name);
        link.textContent = a.name;
        var meta = document.createElement("span");
        meta.className = "muted";
        meta.textContent = " " + a.tz + " · id " + a.id;
        li.appendChild(link);
        li.appendChild(meta);
        list.appendChild(li);
      });
      $("no-apps").hidden = body.apps.length > 0;
      root.setAttribute("data-state", "drawn");
    }).catch(function (e) { showError(e.message); });
  }

  // --- one app's report

  function column(days, key) { return days.map(function (d) { return d[key]; }); }

  function draw(data) {
    var days = data.days, labels = column(days, "day"), final = column(days, "final");
    var a = data.app;
    $("app-name").textContent = a.name;
    var marks = Object.keys(data.done_through).map(function (k) { return k + " " + (data.done_through[k] || "–"); });
    $("analytics-summary").textContent = a.name + " (" + a.id + "), days in " + a.tz + ", " + data.first + " to " +
      data.last + " · final through: " + marks.join(", ");

    C.bars($("chart-launches").querySelector(".plot"), {title: "Launches", categories: labels, values: column(days, "launches"),
      key: "launches", label: "launches", attr: "day", final: final});
    C.line($("chart-active").querySelector(".plot"), {title: "Active devices", days: labels, final: final, series: [
      {key: "dau", label: "DAU", values: column(days, "dau")},
      {key: "wau", label: "WAU", values: column(days, "wau")},
      {key: "mau", label: "MAU", values: column(days, "mau")}]});
    C.stacked($("chart-new-returning").querySelector(".plot"), {title: "New and returning devices", days: labels,
      final: final, series: [{key: "new", label: "new", values: column(days, "new")},
        {key: "returning", label: "returning", values: column(days, "returning"), color: "#93c5fd"}]});
    C.line($("chart-stickiness").querySelector(".plot"), {title: "Stickiness", days: labels, final: final,
      yFormat: F.percent, series: [{key: "stickiness", label: "DAU/MAU", values: column(days, "stickiness"), color: "#9333ea"}]});
    C.line($("chart-usage").querySelector(".plot"), {title: "Usage time per device", days: labels, final: final,
      yFormat: F.duration, steps: C.DURATION_STEPS, series: [
        {key: "usage_per_device_s", label: "mean per device", values: column(days, "usage_per_device_s"), color: "#0891b2"},
        {key: "p50_s", label: "p50", values: column(days, "p50_s"), color: "#16a34a"},
        {key: "p90_s", label: "p90", values: column(days, "p90_s"), color: "#d97706"}]});
    drawDistribution(days);
    C.bars($("chart-users-new").querySelector(".plot"), {title: "New registered users", categories: labels,
      values: users(days, "new"), key: "users.new", label: "new users", attr: "day", final: final, color: "#16a34a"});
    C.line($("chart-users").querySelector(".plot"), {title: "Registered users", days: labels, final: final, series: [
      {key: "users.total", label: "total", values: users(days, "total"), color: "#2563eb"},
      {key: "users.active", label: "signed in that day", values: users(days, "active"), color: "#9333ea"}]});
    ["classic", "unbounded"].forEach(function (table) {
      heatmap("heatmap-" + table, table, table + " retention", data.retention, function (c) { return c[table]; });
    });
    heatmap("heatmap-active", "active", "active-user retention", data.active_retention || [], function (c) { return c.share; });
    drawTrend(data.trend);
    drawBreakdown(data, labels, final);
    drawCustom(data.custom || {}, days);
    drawTable(days);
  }

  /* Registered users of each day: "active" (signed in that day), "new" or "total"; null where not rolled up. */
  function users(days, key) {
    return days.map(function (d) { return d.users ? d.users[key] : null; });
  }

  /* A retention heatmap: rows are cohorts (new devices of a day, or devices active on a day), columns N. */
  function heatmap(id, table, title, cohorts, shares) {
    var columns = cohorts.length ? Object.keys(shares(cohorts[0])).map(Number).sort(function (x, y) { return x - y; }) : [];
    C.heatmap($(id).querySelector(".plot"), {title: title, table: table, columns: columns,
      rows: cohorts.map(function (c) { return {key: c.cohort, size: c.size, values: shares(c)}; })});
  }

  // --- the trend card: the last 7 final days against the 7 before

  function count(v) { return v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"); }

  /* A relative change as "+12 %", "−3 %" (a true minus sign); "–" when there is nothing to compare. */
  function change(v) {
    if (v === null || v === undefined) return "–";
    var p = Math.round(100 * v);
    return (p > 0 ? "+" : p < 0 ? MINUS : "\u00b1") + Math.abs(p) + NNBSP + "%";
  }

  var TREND = [["new", count], ["active", count], ["d1", F.percent]];

  function setData(node, name, v) {
    if (v === null || v === undefined) node.removeAttribute("data-" + name);
    else node.setAttribute("data-" + name, String(v));
  }

  function drawTrend(t) {
    $("trend-none").hidden = !!t;
    document.querySelector("#trend .trend-grid").hidden = !t;  // no tiles of dashes: the note says why
    $("trend-range").textContent = t ? "(" + span(t.current) + ") against the 7 before (" + span(t.previous) + ")" : "";
    TREND.forEach(function (item) {
      var key = item[0], fmt = item[1], box = $("trend-" + key);
      var now = t ? t.current[key] : null, before = t ? t.previous[key] : null, ch = t ? t.change[key] : null;
      setData(box, "current", now);
      setData(box, "previous", before);
      setData(box, "change", ch);
      box.querySelector(".trend-value").textContent = fmt(now);
      var c = box.querySelector(".trend-change");
      c.textContent = change(ch);
      c.className = "trend-change " + (ch === null || ch === undefined ? "flat" : ch > 0 ? "up" : ch < 0 ? "down" : "flat");
      c.title = "change against the 7 days before";
      box.querySelector(".trend-prev").textContent = t ? "7 days before: " + fmt(before) : "";
    });
  }

  function span(w) { return F.shortDay(w.first) + "\u2013" + F.shortDay(w.last); }

  // --- the breakdown by channel, platform or version

  function valueName(v) { return v === "" || v === null || v === undefined ? "(none)" : v; }

  function findValue(rows, v) {
    for (var i = 0; i < rows.length; i++) if (rows[i].value === v) return rows[i];
    return null;
  }

  function drawBreakdown(data, labels, final) {
    var by = data.by || "version", per = data.breakdown || {};
    Array.prototype.forEach.call(document.querySelectorAll("#analytics .by-name"), function (n) { n.textContent = by; });
    document.querySelector("#breakdown-table .by-name-col").textContent = by.charAt(0).toUpperCase() + by.slice(1);
    Array.prototype.forEach.call(document.querySelectorAll("#breakdown-by input"), function (r) { r.checked = r.value === by; });

    // The chart's values: those with the most DAU over the range first; past MAX_SERIES they join "other".
    var totals = {};
    Object.keys(per).forEach(function (day) {
      per[day].values.forEach(function (r) { totals[r.value] = (totals[r.value] || 0) + r.dau; });
    });
    var ranked = Object.keys(totals).sort(function (a, b) { return totals[b] - totals[a] || (a < b ? -1 : a > b ? 1 : 0); });
    var shown = ranked.slice(0, MAX_SERIES), folded = ranked.slice(MAX_SERIES), colors = C.colors(shown.length);
    var series = shown.map(function (v, k) {
      return {key: "v:" + v, label: valueName(v), color: colors[k], values: labels.map(function (day) {
        var r = per[day] ? findValue(per[day].values, v) : null;
        return r ? r.dau : null;
      })};
    });
    var other = labels.map(function (day) {
      var b = per[day];
      if (!b) return null;
      var sum = b.other ? b.other.dau : null;
      folded.forEach(function (v) {
        var r = findValue(b.values, v);
        if (r) sum = (sum || 0) + r.dau;
      });
      return sum;
    });
    if (other.some(function (v) { return v !== null; })) series.push({key: "other", label: "other", values: other, color: "#9ca3af"});
    var fig = $("chart-breakdown");
    C.stacked(fig.querySelector(".plot"), {title: "DAU by " + by, days: labels, final: final, series: series, legend: false});
    C.legendList(fig.querySelector(".chart-legend"), series);
    drawBreakdownTable(per, data.days);
  }

  /* The latest day of the breakdown: each value's launches, DAU and new devices, then "other (k values)". */
  function drawBreakdownTable(per, days) {
    var body = $("breakdown-table").querySelector("tbody"), caption = $("breakdown-day"), table = $("breakdown-last");
    body.textContent = "";
    var have = Object.keys(per).sort(), day = have[have.length - 1];
    if (!day) {
      caption.textContent = "(no day in this range)";
      table.removeAttribute("data-day");
      var tr = body.insertRow(), td = tr.insertCell();
      tr.className = "no-data";
      td.colSpan = 4;
      td.textContent = "No events in this range.";
      return;
    }
    var provisional = days.some(function (d) { return d.day === day && d.final === false; });
    caption.textContent = "on " + day + (provisional ? " (not final yet)" : "");
    table.setAttribute("data-day", day);
    per[day].values.forEach(function (r) {
      breakdownRow(body, valueName(r.value), r).setAttribute("data-value", r.value);
    });
    var o = per[day].other;
    if (o) {
      var row = breakdownRow(body, "other (" + o.values + (o.values === 1 ? " value)" : " values)"), o);
      row.className = "other";
      row.setAttribute("data-other", String(o.values));
    }
  }

  function breakdownRow(body, name, r) {
    var tr = document.createElement("tr"), th = document.createElement("th");
    th.scope = "row";
    th.textContent = name;
    tr.appendChild(th);
    ["launches", "dau", "new"].forEach(function (k) {
      var td = document.createElement("td");
      td.setAttribute("data-key", k);
      td.setAttribute("data-value", String(r[k]));
      td.textContent = count(r[k]);
      tr.appendChild(td);
    });
    body.appendChild(tr);
    return tr;
  }

  // --- custom counters: a table per counter, newest day first

  var TYPES = {sum: "sum", slot: "sum per slot", cpv: "sum per channel, platform and version"};
  var TOP_SHOWN = 3;  // values of a cpv dimension shown in its cell; the title lists them all

  function drawCustom(custom, days) {
    var box = $("custom"), names = Object.keys(custom).sort();
    box.textContent = "";
    $("no-custom").hidden = names.length > 0;
    var provisional = {}, anyProvisional = false;
    days.forEach(function (d) { provisional[d.day] = d.final === false; });
    names.forEach(function (name) {
      var perDay = custom[name], dayKeys = Object.keys(perDay).sort().reverse();
      var type = perDay[dayKeys[0]].type, slots = {};
      dayKeys.forEach(function (d) { Object.keys(perDay[d].slots || {}).forEach(function (s) { slots[s] = true; }); });
      var cols = type === "cpv" ? BYS.map(function (b) { return {key: "by:" + b, head: b}; })
        : Object.keys(slots).sort().map(function (s) { return {key: "slot:" + s, head: s === "" ? "(none)" : s, slot: s}; });

      var fig = document.createElement("figure");
      fig.className = "chart counter " + type;
      fig.setAttribute("data-counter", name);
      var cap = document.createElement("figcaption"), kind = document.createElement("span");
      cap.textContent = name + " ";
      kind.className = "muted";
      kind.textContent = "(" + (TYPES[type] || type) + ")";
      cap.appendChild(kind);
      fig.appendChild(cap);
      var wrap = document.createElement("div"), table = document.createElement("table");
      wrap.className = "counter-wrap";
      table.className = "data numbers counter-table";
      var head = table.createTHead().insertRow();
      ["Day", "Total"].concat(cols.map(function (c) { return c.head; })).forEach(function (h, i) {
        var th = document.createElement("th");
        th.scope = "col";
        th.textContent = h;
        if (type === "cpv" && i > 1) th.className = "values";
        head.appendChild(th);
      });
      var body = table.createTBody();
      dayKeys.forEach(function (day) {
        var c = perDay[day], tr = body.insertRow(), th = document.createElement("th");
        tr.setAttribute("data-day", day);
        th.scope = "row";
        th.textContent = day;
        if (provisional[day]) {
          anyProvisional = true;
          tr.className = "not-final";
          th.title = "not final yet";
          th.appendChild(document.createTextNode(" *"));
        }
        tr.appendChild(th);
        counterCell(tr, "total", c.total, count(c.total));
        cols.forEach(function (col) {
          if (type === "cpv") {
            var b = (c.by || {})[col.head], td = counterCell(tr, col.key, null, b ? topValues(b, TOP_SHOWN) : "–");
            td.className = "values";
            if (b) td.title = topValues(b, b.values.length);
          } else {
            // A day's row sums all its events: a slot it does not name had none that day.
            var v = (c.slots || {})[col.slot] || 0;
            counterCell(tr, col.key, v, count(v));
          }
        });
      });
      wrap.appendChild(table);
      fig.appendChild(wrap);
      box.appendChild(fig);
    });
    $("custom-note").hidden = !anyProvisional;
  }

  function counterCell(tr, key, v, text) {
    var td = document.createElement("td");
    td.setAttribute("data-key", key);
    if (v !== null && v !== undefined) td.setAttribute("data-value", String(v));
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  /* "appstore 12 · googleplay 9 · other (2 values) 3": the first n values of a cpv dimension and its other. */
  function topValues(b, n) {
    var parts = b.values.slice(0, n).map(function (r) { return valueName(r.value) + " " + count(r.amount); });
    var rest = b.values.length - n;
    if (rest > 0) parts.push("+" + rest + " more");
    if (b.other) parts.push("other (" + b.other.values + (b.other.values === 1 ? " value) " : " values) ") + count(b.other.amount));
    return parts.join(" \u00b7 ");
  }

  /* Whether a report day has a usage distribution. The report gives one (every bucket, zeros
   * included) only for days the usage job has computed, and null for the others (before the app's
   * first event, not final yet); an empty object would draw no bar at all, so it counts as none,
   * as it does in Python (`if d["distribution"]`) and in the browser test. Not JS truthiness: an
   * empty object is truthy there. */
  function hasDistribution(d) {
    var dist = d.distribution;
    return dist !== null && typeof dist === "object" && Object.keys(dist).length > 0;
  }

  /* Devices by daily usage time, on the latest day that has a distribution. */
  function drawDistribution(days) {
    var latest = null;
    days.forEach(function (d) { if (hasDistribution(d)) latest = d; });
    var fig = $("chart-distribution"), caption = $("distribution-day");
    if (!latest) {
      caption.textContent = "(no day with usage yet)";
      fig.removeAttribute("data-day");
      C.bars(fig.querySelector(".plot"), {categories: [], values: [], key: "devices", attr: "bucket"});
      return;
    }
    var buckets = Object.keys(latest.distribution);
    caption.textContent = "on " + latest.day;
    fig.setAttribute("data-day", latest.day);
    C.bars(fig.querySelector(".plot"), {title: "Devices by usage time", categories: buckets, key: "devices",
      label: "devices", attr: "bucket", valueLabels: true, catLabel: function (b) { return b; },
      values: buckets.map(function (b) { return latest.distribution[b]; }), color: "#0891b2"});
  }

  function fixed(digits, scale, suffix) {
    return function (v) { return v === null || v === undefined ? "–" : (v * scale).toFixed(digits) + suffix; };
  }

  var TABLE = [
    ["launches", F.plain], ["dau", F.plain], ["new", F.plain], ["returning", F.plain], ["wau", F.plain],
    ["mau", F.plain], ["stickiness", fixed(1, 100, "%")], ["usage_per_device_s", F.duration],
    ["launches_per_device", fixed(2, 1, "")], ["p50_s", F.duration], ["p90_s", F.duration],
    ["users.active", F.plain], ["users.new", F.plain], ["users.total", F.plain]];

  /* A day's value of a table key; "users.new" reads d.users.new. */
  function pick(d, key) {
    return key.split(".").reduce(function (v, k) { return v === null || v === undefined ? v : v[k]; }, d);
  }

  function drawTable(days) {
    var body = $("numbers").querySelector("tbody");
    body.textContent = "";
    var provisional = false, blank = [];
    days.slice().reverse().forEach(function (d) {
      // A day without any number (before the app's first event) is summed up below, not a row of dashes.
      if (!TABLE.some(function (col) { var v = pick(d, col[0]); return v !== null && v !== undefined; })) {
        blank.push(d.day);
        return;
      }
      var tr = document.createElement("tr");
      tr.setAttribute("data-day", d.day);
      var th = document.createElement("th");
      th.scope = "row";
      th.textContent = d.day;
      if (d.final === false) {
        provisional = true;
        tr.className = "not-final";
        var tag = document.createElement("span");
        tag.className = "not-final-tag";
        tag.textContent = "not final yet";
        th.appendChild(document.createTextNode(" "));
        th.appendChild(tag);
      }
      tr.appendChild(th);
      TABLE.forEach(function (col) {
        var td = document.createElement("td");
        td.setAttribute("data-key", col[0]);
        var v = pick(d, col[0]);
        if (v !== null && v !== undefined) td.setAttribute("data-value", String(v));
        td.textContent = col[1](v);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    if (blank.length) {
      var tr = document.createElement("tr"), td = document.createElement("td");
      tr.className = "no-data";
      td.colSpan = TABLE.length + 1;
      td.textContent = blank.length + (blank.length === 1 ? " day" : " days") + " without data (" +
        blank[blank.length - 1] + (blank.length > 1 ? " to " + blank[0] : "") + ")";
      tr.appendChild(td);
      body.appendChild(tr);
    }
    $("not-final-note").hidden = !provisional;
  }

  function chosenRange() {
    var q = new URLSearchParams(window.location.search).get("days");
    return RANGES.indexOf(q) >= 0 ? q : "14";
  }

  function chosenBy() {
    var q = new URLSearchParams(window.location.search).get("by");
    return BYS.indexOf(q) >= 0 ? q : "version";
  }

  /* The whole report again, so the breakdown and the rest always cover the same days. */
  function load(days, by) {
    var mine = ++seq;
    root.setAttribute("data-state", "loading");
    $("analytics-error").hidden = true;
    getJSON("/apps/" + encodeURIComponent(app) + "/report?days=" + days + "&by=" + by).then(function (data) {
      if (mine !== seq) return;  // a newer range or dimension was chosen while this one loaded
      draw(data);
      $("analytics-body").hidden = false;
      root.setAttribute("data-days", String(data.days.length));
      root.setAttribute("data-first", data.first);
      root.setAttribute("data-last", data.last);
      root.setAttribute("data-by", data.by || by);
      root.setAttribute("data-state", "drawn");
    }).catch(function (e) { if (mine === seq) showError(e.message); });
  }

  if (!app) {
    chooser();
    return;
  }
  var select = $("range"), by = chosenBy();

  function remember(key, value) {
    var url = new URL(window.location.href);
    url.searchParams.set(key, value);
    window.history.replaceState(null, "", url.pathname + url.search);
  }

  select.value = chosenRange();
  select.addEventListener("change", function () {
    remember("days", select.value);
    load(select.value, by);
  });
  Array.prototype.forEach.call(document.querySelectorAll("#breakdown-by input"), function (radio) {
    radio.checked = radio.value === by;
    radio.addEventListener("change", function () {
      if (!radio.checked) return;
      by = radio.value;
      remember("by", by);
      load(select.value, by);
    });
  });
  load(select.value, by);
})();

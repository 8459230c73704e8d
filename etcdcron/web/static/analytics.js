/* analytics.js: the analytics page. Without an app it lists the apps (GET /api/v1/apps); with one it
 * fetches GET /api/v1/apps/{app}/report?days=N (the dict `etcdcron analytics report --json` prints)
 * and draws it with charts.js. The numbers are drawn as the API gives them, never recomputed here,
 * so the page shows exactly what the CLI reports.
 *
 * #analytics carries data-state (loading, drawn, error) and, once drawn, data-days, data-first and
 * data-last of the report it shows: a test waits on those rather than on time.
 */
(function () {
  "use strict";

  var C = window.EtcdCharts, F = C.format;
  var RANGES = ["7", "14", "30", "90"];
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
    ["classic", "unbounded"].forEach(function (table) {
      var columns = data.retention.length ? Object.keys(data.retention[0][table]).map(Number).sort(function (x, y) { return x - y; }) : [];
      C.heatmap($("heatmap-" + table).querySelector(".plot"), {title: table + " retention", table: table, columns: columns,
        rows: data.retention.map(function (c) { return {key: c.cohort, size: c.size, values: c[table]}; })});
    });
    drawTable(days);
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
    ["launches_per_device", fixed(2, 1, "")], ["p50_s", F.duration], ["p90_s", F.duration]];

  function drawTable(days) {
    var body = $("numbers").querySelector("tbody");
    body.textContent = "";
    var provisional = false, blank = [];
    days.slice().reverse().forEach(function (d) {
      // A day without any number (before the app's first event) is summed up below, not a row of dashes.
      if (!TABLE.some(function (col) { return d[col[0]] !== null && d[col[0]] !== undefined; })) {
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
        var v = d[col[0]];
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

  function load(days) {
    var mine = ++seq;
    root.setAttribute("data-state", "loading");
    $("analytics-error").hidden = true;
    getJSON("/apps/" + encodeURIComponent(app) + "/report?days=" + days).then(function (data) {
      if (mine !== seq) return;  // a newer range was chosen while this one loaded
      draw(data);
      $("analytics-body").hidden = false;
      root.setAttribute("data-days", String(data.days.length));
      root.setAttribute("data-first", data.first);
      root.setAttribute("data-last", data.last);
      root.setAttribute("data-state", "drawn");
    }).catch(function (e) { if (mine === seq) showError(e.message); });
  }

  if (!app) {
    chooser();
    return;
  }
  var select = $("range");
  select.value = chosenRange();
  select.addEventListener("change", function () {
    var url = new URL(window.location.href);
    url.searchParams.set("days", select.value);
    window.history.replaceState(null, "", url.pathname + url.search);
    load(select.value);
  });
  load(select.value);
})();

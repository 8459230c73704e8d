"""The analytics page in a real Chromium: its charts are drawn from the API, and every drawn mark
carries the number `etcdcron analytics report --json` prints for the same app and range: the daily
metrics, registered users, retention (classic, unbounded, active users), the trend card, the
breakdown of the chosen dimension and the custom counters."""

from __future__ import annotations

import json
import math
import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from etcdcron.analytics import jobs
from etcdcron.analytics.metrics import BUCKETS
from etcdcron.analytics.store import AnalyticsStore
from etcdcron.executor import RunContext

from .helpers import login, wait

APP = "shop"
ZONE = "Asia/Kolkata"  # UTC+05:30: the app's days are not UTC days
GRACE = 2 * 86_400  # the last two or three seeded days stay "not final yet": their WAU, usage, … are gaps
SEEDED_DAYS = 20
TOP = 3  # breakdown values kept per day: channels (six in the seed) and versions (four) get an "other"
COUNTERS = {"coins": {"type": "sum", "slots": []}, "taps": {"type": "slot", "slots": ["a", "b", "c"]},
            "gems": {"type": "cpv", "slots": []}}

# The drawn series of each chart: data-series of its marks = the report's key of a day.
SERIES = {
    "chart-launches": ("launches",),
    "chart-active": ("dau", "wau", "mau"),
    "chart-new-returning": ("new", "returning"),
    "chart-stickiness": ("stickiness",),
    "chart-usage": ("usage_per_device_s", "p50_s", "p90_s"),
    "chart-users-new": ("users.new",),
    "chart-users": ("users.total", "users.active"),
}

# Every element matching a selector, with its tag, text and data-* attributes, in one round trip.
MARKS_JS = """
return Array.from(document.querySelectorAll(arguments[0])).map(function (e) {
  var out = {tag: e.tagName.toLowerCase(), text: e.textContent, cls: e.getAttribute('class') || ''};
  for (var i = 0; i < e.attributes.length; i++) {
    var a = e.attributes[i];
    if (a.name.indexOf('data-') === 0) out[a.name.slice(5)] = a.value;
  }
  return out;
});"""

# The numbers table: each cell with its row's day, its report key and its exact value.
NUMBERS_JS = """
return Array.from(document.querySelectorAll('#numbers tbody td[data-value]')).map(function (td) {
  return {day: td.parentNode.getAttribute('data-day'), key: td.getAttribute('data-key'), value: td.getAttribute('data-value')};
});"""
TABLE_KEYS = ("launches", "dau", "new", "returning", "wau", "mau", "stickiness", "usage_per_device_s",
              "launches_per_device", "p50_s", "p90_s", "users.active", "users.new", "users.total")

# The breakdown table: each row's value (None for the "other" row, with its count of values) and cells.
BREAKDOWN_JS = """
return Array.from(document.querySelectorAll('#breakdown-table tbody tr')).map(function (tr) {
  var out = {value: tr.getAttribute('data-value'), other: tr.getAttribute('data-other'), name: tr.querySelector('th').textContent};
  tr.querySelectorAll('td[data-key]').forEach(function (td) { out[td.getAttribute('data-key')] = td.getAttribute('data-value'); });
  return out;
});"""

# Every custom counter table's cells: counter, day, key (total, slot:NAME, by:DIM), exact value and text.
CUSTOM_JS = """
return Array.from(document.querySelectorAll('#custom figure[data-counter] tbody td[data-key]')).map(function (td) {
  return {counter: td.closest('figure').getAttribute('data-counter'), day: td.parentNode.getAttribute('data-day'),
          key: td.getAttribute('data-key'), value: td.getAttribute('data-value'), text: td.textContent};
});"""


def pick(day: dict, key: str):
    """A report day's value of a page key: "users.new" is day["users"]["new"]."""
    value = day
    for part in key.split("."):
        value = value[part]
    return value


@pytest.fixture
def seeded(web) -> str:
    """An app in Asia/Kolkata with three declared counters (sum, slot, cpv) and breakdowns kept to the top 3,
    20 days of seeded events of 150 devices (userIds and custom events included) and its metrics computed by the builtin jobs."""
    web.cli("apps", "create", APP, "--tz", ZONE, "--grace", str(GRACE))
    with AnalyticsStore(web.mongo_uri) as astore:
        astore.update_app(astore.app(APP).id, {"top": TOP, "counters": COUNTERS})
    web.cli("analytics", "seed", "--app", APP, "--devices", "150", "--days", str(SEEDED_DAYS))
    now = int(time.time())
    for fence, fn in enumerate((jobs.rollup, jobs.active_users, jobs.retention, jobs.usage), start=1):
        fn(RunContext(fn.__name__, now, "test", fence, 1, {"app": APP}, web.mongo_uri))
    return APP


def has_distribution(day: dict) -> bool:
    """The page's rule (hasDistribution in analytics.js) for a day of the report: it has a usage
    distribution when it is a non-empty dict of buckets; None (not computed: no data yet, or not
    final) and {} are none."""
    return isinstance(day["distribution"], dict) and len(day["distribution"]) > 0


def marks(browser, selector: str) -> list[dict]:
    return browser.execute_script(MARKS_JS, selector)


def wait_drawn(browser, days: int, by: str = "version") -> None:
    """Until the page has drawn a report of ``days`` days broken down by ``by`` (the script marks #analytics when done)."""
    def drawn(d) -> bool:
        root = d.find_element(By.ID, "analytics")
        if root.get_attribute("data-state") == "error":
            raise AssertionError(d.find_element(By.ID, "analytics-error").text)
        return (root.get_attribute("data-state") == "drawn" and root.get_attribute("data-days") == str(days)
                and root.get_attribute("data-by") == by)

    wait(browser, 30).until(drawn)


def report_as_drawn(web, browser, days: int, by: str = "version") -> dict:
    """`analytics report --by BY --json` for the page's app and range; should the app's day turn between
    the page's request and this one, the page is reloaded so both cover the same days."""
    for _ in range(2):
        report = json.loads(web.cli("analytics", "report", "--app", APP, "--days", str(days), "--by", by, "--json").stdout)
        root = browser.find_element(By.ID, "analytics")
        if (report["first"], report["last"]) == (root.get_attribute("data-first"), root.get_attribute("data-last")):
            return report
        browser.refresh()
        wait(browser).until(EC.staleness_of(root))  # not the old page's "drawn"
        wait_drawn(browser, days, by)
    raise AssertionError("the page and the CLI report different ranges")


def scroll_to(browser, element_id: str) -> None:
    """Scroll the element to the top of the window (for a screenshot of that part of the page)."""
    browser.execute_script("document.getElementById(arguments[0]).scrollIntoView({block: 'start'})", element_id)


def full_page_shot(browser, shot, name: str) -> None:
    """A screenshot of the whole page, not just the first screenful (the heatmaps are below the fold)."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(max(height + 40, 1000), 6000))
    shot(browser, name)
    browser.set_window_size(1400, 1000)


def assert_charts_equal_report(browser, report: dict) -> None:
    days = report["days"]
    for chart, keys in SERIES.items():
        for key in keys:
            drawn = marks(browser, f"#{chart} svg [data-series='{key}'][data-value]")
            expected = {d["day"]: pick(d, key) for d in days if pick(d, key) is not None}
            assert expected, f"{chart}/{key}: the seeded range has no {key}"
            assert len(drawn) == len(expected), f"{chart}/{key}: {len(drawn)} marks for {len(expected)} days with data"
            assert {m["day"]: float(m["value"]) for m in drawn} == expected, f"{chart}/{key}"
            assert {m["tag"] for m in drawn} <= {"circle", "rect"}
            assert {m["day"]: m["final"] for m in drawn} == {d["day"]: str(d["final"]).lower() for d in days
                                                            if pick(d, key) is not None}

    # The report has a distribution of every bucket (zeros included) where the usage job ran, else None.
    labels = [b[0] for b in BUCKETS]
    assert all(d["distribution"] is None or list(d["distribution"]) == labels for d in days), \
        {d["day"]: d["distribution"] for d in days}
    with_distribution = [d for d in days if has_distribution(d)]
    assert with_distribution, "the seeded range has no day with a usage distribution"
    latest = with_distribution[-1]
    figure = browser.find_element(By.ID, "chart-distribution")
    assert (figure.get_attribute("data-day"), browser.find_element(By.ID, "distribution-day").text) == \
        (latest["day"], f"on {latest['day']}")
    bars = marks(browser, "#chart-distribution svg rect.bar-mark")
    assert [m["bucket"] for m in bars] == labels, bars
    assert {m["bucket"]: float(m["value"]) for m in bars} == latest["distribution"]

    heatmaps = {"classic": [(c["cohort"], c["classic"]) for c in report["retention"]],
                "unbounded": [(c["cohort"], c["unbounded"]) for c in report["retention"]],
                "active": [(c["cohort"], c["share"]) for c in report["active_retention"]]}
    for table, rows in heatmaps.items():
        cells = marks(browser, f"#heatmap-{table} svg rect.cell")
        expected = {(cohort, n): share for cohort, shares in rows for n, share in shares.items() if share is not None}
        assert expected and len(cells) == len(expected), table
        assert all(m["table"] == table for m in cells)
        assert {(m["cohort"], m["n"]): float(m["value"]) for m in cells} == expected, table
        gaps = marks(browser, f"#heatmap-{table} svg rect.gap")
        assert len(gaps) == sum(1 for _, shares in rows for v in shares.values() if v is None)
        labels = marks(browser, f"#heatmap-{table} svg text.cell-label")
        assert len(labels) == len(cells)
        for m in labels:  # a percentage rounded for display (to 0.1 below 1 %)
            share = expected[(m["cohort"], m["n"])]
            assert abs(float(m["text"].rstrip("%")) - 100 * share) <= 0.5 + 1e-9, (m, share)

    rows = marks(browser, "#numbers tbody tr[data-day]")
    with_data = [d["day"] for d in reversed(days) if any(pick(d, k) is not None for k in TABLE_KEYS)]
    assert [r["day"] for r in rows] == with_data
    blank = len(days) - len(with_data)
    summary = marks(browser, "#numbers tbody tr.no-data")
    assert (summary[0]["text"].startswith(f"{blank} days without data") if blank else not summary), summary
    provisional = [d["day"] for d in days if d["final"] is False]
    assert [r["day"] for r in rows if "not-final" in r["cls"]] == provisional[::-1]
    by_day = {d["day"]: d for d in days}
    numbers = browser.execute_script(NUMBERS_JS)
    assert numbers and all(float(c["value"]) == pick(by_day[c["day"]], c["key"]) for c in numbers)
    assert len(numbers) == sum(1 for d in days for k in TABLE_KEYS if pick(d, k) is not None)
    assert {c["key"] for c in numbers} >= {"users.active", "users.new", "users.total"}

    assert_trend_equals_report(browser, report["trend"])
    assert_breakdown_equals_report(browser, report)
    assert_custom_equals_report(browser, report)


def change_text(change: float | None) -> str:
    """The trend card's change as the page writes it: "+12 %", "−3 %" (minus sign), "–" without a base."""
    if change is None:
        return "–"
    p = math.floor(100 * change + 0.5)  # JavaScript's Math.round: halves up, not to even
    return ("+" if p > 0 else "−" if p < 0 else "±") + f"{abs(p)} %"


def assert_trend_equals_report(browser, trend: dict) -> None:
    """Each trend tile carries the report's current and previous values and their change, and shows the change."""
    assert trend is not None and trend["current"]["new"] > 0 and trend["current"]["d1"] is not None, trend
    for key in ("new", "active", "d1"):
        tile = browser.find_element(By.ID, f"trend-{key}")
        drawn = {name: tile.get_attribute(f"data-{name}") for name in ("current", "previous", "change")}
        expected = {"current": trend["current"][key], "previous": trend["previous"][key], "change": trend["change"][key]}
        assert {k: None if v is None else float(v) for k, v in drawn.items()} == expected, key
        assert tile.find_element(By.CSS_SELECTOR, ".trend-change").text == change_text(trend["change"][key]), key
        if key != "d1":
            assert tile.find_element(By.CSS_SELECTOR, ".trend-value").text == f"{trend['current'][key]:,}"
    assert not browser.find_element(By.ID, "trend-none").is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "#trend .trend-grid").is_displayed()


def assert_breakdown_equals_report(browser, report: dict) -> None:
    """The table holds the report's latest breakdown day (values then "other (k values)"); the stacked chart
    has a mark of each value's DAU on each day it is among the top values, and the day's other."""
    by, per = report["by"], report["breakdown"]
    assert per, f"the seeded range has no breakdown by {by}"
    last = max(per)
    assert browser.find_element(By.ID, "breakdown-last").get_attribute("data-day") == last
    rows = browser.execute_script(BREAKDOWN_JS)
    expected = [{"value": r["value"], "other": None, "launches": str(r["launches"]), "dau": str(r["dau"]), "new": str(r["new"])}
                for r in per[last]["values"]]
    other = per[last]["other"]
    if other:
        expected.append({"value": None, "other": str(other["values"]), "launches": str(other["launches"]),
                         "dau": str(other["dau"]), "new": str(other["new"])})
    assert [{k: r[k] for k in ("value", "other", "launches", "dau", "new")} for r in rows] == expected
    if other:
        assert rows[-1]["name"] == f"other ({other['values']} value{'s' if other['values'] != 1 else ''})"

    values = {r["value"] for b in per.values() for r in b["values"]}
    assert len(values) <= 10, "more values than the chart colours: its other would sum some of them"
    for value in values:
        drawn = marks(browser, f"#chart-breakdown svg rect.bar-mark[data-series='v:{value}']")
        assert {m["day"]: float(m["value"]) for m in drawn} == \
            {day: r["dau"] for day, b in per.items() for r in b["values"] if r["value"] == value}, value
    drawn = marks(browser, "#chart-breakdown svg rect.bar-mark[data-series='other']")
    assert {m["day"]: float(m["value"]) for m in drawn} == {day: b["other"]["dau"] for day, b in per.items() if b["other"]}
    legend = [m["series"] for m in marks(browser, "#chart-breakdown .chart-legend li")]
    assert sorted(legend) == sorted([f"v:{v}" for v in values] + (["other"] if any(b["other"] for b in per.values()) else []))


def assert_custom_equals_report(browser, report: dict) -> None:
    """A table per counter: each day's total and slot sums as the report has them; a cpv counter's cells
    name its top values with their amounts."""
    custom = report["custom"]
    assert set(custom) == set(COUNTERS), custom.keys()
    cells = browser.execute_script(CUSTOM_JS)
    exact = {(c["counter"], c["day"], c["key"]): float(c["value"]) for c in cells if c["value"] is not None}
    expected = {}
    for name, per_day in custom.items():
        slots = {slot for c in per_day.values() for slot in c.get("slots", {})}  # a column per slot seen in the range
        for day, c in per_day.items():
            expected[(name, day, "total")] = c["total"]
            expected.update({(name, day, f"slot:{slot}"): c["slots"].get(slot, 0) for slot in slots})
    assert exact == expected
    assert {slot for (name, _, key) in exact if name == "taps" and key.startswith("slot:")
            for slot in [key[5:]]} == set(COUNTERS["taps"]["slots"])
    texts = {(c["counter"], c["day"], c["key"]): c["text"] for c in cells if c["value"] is None}
    gems = custom["gems"]
    assert {(n, d) for n, d, _ in texts} == {("gems", day) for day in gems}
    for day, c in gems.items():
        for dim, b in c["by"].items():
            top = b["values"][0]
            assert texts[("gems", day, f"by:{dim}")].startswith(f"{top['value'] or '(none)'} {top['amount']:,}"), (day, dim)
    assert not browser.find_element(By.ID, "no-custom").is_displayed()


def test_analytics_page_draws_the_report_and_redraws_on_a_new_range(web, seeded, browser, shot):
    """The chooser lists the app; its page draws every chart, heatmap cell and table number equal to
    `analytics report --json` for the same range, with gaps for days not computed; changing the range redraws."""
    login(browser, web, "viewer")
    browser.get(f"{web.url}/analytics")
    link = wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#app-list a.app-link[data-app='{APP}']"))
    shot(browser, "analytics-apps")
    link[0].click()

    wait(browser).until(lambda d: d.current_url.endswith(f"/analytics/{APP}"))
    wait_drawn(browser, 14)
    report = report_as_drawn(web, browser, 14)
    assert report["app"]["tz"] == ZONE and sum(1 for d in report["days"] if d["dau"] is not None) == 14
    assert any(d["final"] is False for d in report["days"]), "the 2-day grace leaves recent days not final"
    assert_charts_equal_report(browser, report)
    assert browser.find_element(By.ID, "not-final-note").is_displayed()
    shot(browser, "analytics-trend")  # the first screenful: the trend card above the charts
    scroll_to(browser, "custom")
    shot(browser, "analytics-custom")
    full_page_shot(browser, shot, "analytics")

    Select(browser.find_element(By.ID, "range")).select_by_value("30")
    wait_drawn(browser, 30)
    assert browser.current_url.endswith(f"/analytics/{APP}?days=30")
    report = report_as_drawn(web, browser, 30)
    # 20 seeded days in a 30-day range: the ten days before them are gaps in every chart.
    assert sum(1 for d in report["days"] if d["dau"] is not None) == SEEDED_DAYS
    assert_charts_equal_report(browser, report)
    full_page_shot(browser, shot, "analytics-30-days")

    # Another dimension: the page fetches by=channel and redraws the breakdown (and keeps the range).
    browser.find_element(By.CSS_SELECTOR, "label[for='by-channel']").click()
    wait_drawn(browser, 30, "channel")
    assert browser.find_element(By.ID, "by-channel").is_selected()
    assert browser.current_url.endswith(f"/analytics/{APP}?days=30&by=channel")
    report = report_as_drawn(web, browser, 30, "channel")
    assert any(b["other"] for b in report["breakdown"].values()), "six seeded channels, top 3: an other"
    assert_breakdown_equals_report(browser, report)
    assert browser.find_element(By.CSS_SELECTOR, "#breakdown-table thead th").text == "Channel"
    scroll_to(browser, "breakdown-title")
    shot(browser, "analytics-breakdown-channel")
    # Nothing was blocked by the page's CSP and no script failed (a missing favicon is no concern here).
    errors = [e["message"] for e in browser.get_log("browser") if "favicon" not in e["message"]]
    assert not errors, errors


def test_an_unknown_app_shows_the_apis_error(web, browser, shot):
    """The page of an app that does not exist says so in one line (the API's 404 message), drawing nothing."""
    login(browser, web, "viewer")
    browser.get(f"{web.url}/analytics/ghost")
    wait(browser).until(lambda d: d.find_element(By.ID, "analytics").get_attribute("data-state") == "error")
    assert browser.find_element(By.ID, "analytics-error").text == "unknown app 'ghost'"
    assert not browser.find_elements(By.CSS_SELECTOR, "#analytics svg")
    assert not browser.find_element(By.ID, "analytics-body").is_displayed()
    shot(browser, "analytics-unknown-app")


def test_an_app_without_data_shows_dashes_not_numbers(web, browser, shot):
    """An app with no events yet: the trend card says so with "–" in every tile, the breakdown and the
    custom counters say there is nothing, and no script fails on the empty report."""
    web.cli("apps", "create", "quiet", "--tz", ZONE)
    report = json.loads(web.cli("analytics", "report", "--app", "quiet", "--by", "version", "--json").stdout)
    assert report["trend"] is None and report["breakdown"] == {} and report["custom"] == {}
    login(browser, web, "viewer")
    browser.get(f"{web.url}/analytics/quiet")
    wait_drawn(browser, 14)
    assert browser.find_element(By.ID, "trend-none").is_displayed()
    assert not browser.find_element(By.CSS_SELECTOR, "#trend .trend-grid").is_displayed()
    for key in ("new", "active", "d1"):
        tile = browser.find_element(By.ID, f"trend-{key}")
        assert [tile.find_element(By.CSS_SELECTOR, c).get_attribute("textContent") for c in (".trend-value", ".trend-change")] \
            == ["–", "–"]
        assert all(tile.get_attribute(f"data-{a}") is None for a in ("current", "previous", "change"))
    assert browser.find_element(By.ID, "breakdown-last").get_attribute("data-day") is None
    assert browser.find_element(By.CSS_SELECTOR, "#breakdown-table tbody").text == "No events in this range."
    assert not marks(browser, "#chart-breakdown svg rect.bar-mark")
    assert browser.find_element(By.ID, "no-custom").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, "#custom figure")
    shot(browser, "analytics-empty")
    errors = [e["message"] for e in browser.get_log("browser") if "favicon" not in e["message"]]
    assert not errors, errors

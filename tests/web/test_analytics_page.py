"""The analytics page in a real Chromium: its charts are drawn from the API, and every drawn mark
carries the number `etcdcron analytics report --json` prints for the same app and range."""

from __future__ import annotations

import json
import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from etcdcron.analytics import jobs
from etcdcron.analytics.metrics import BUCKETS
from etcdcron.executor import RunContext

from .helpers import login, wait

APP = "shop"
ZONE = "Asia/Kolkata"  # UTC+05:30: the app's days are not UTC days
GRACE = 2 * 86_400  # the last two or three seeded days stay "not final yet": their WAU, usage, … are gaps
SEEDED_DAYS = 20

# The drawn series of each chart: data-series of its marks = the report's key of a day.
SERIES = {
    "chart-launches": ("launches",),
    "chart-active": ("dau", "wau", "mau"),
    "chart-new-returning": ("new", "returning"),
    "chart-stickiness": ("stickiness",),
    "chart-usage": ("usage_per_device_s", "p50_s", "p90_s"),
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
              "launches_per_device", "p50_s", "p90_s")


@pytest.fixture
def seeded(web) -> str:
    """An app in Asia/Kolkata with 20 days of seeded events of 150 devices and its metrics computed by the builtin jobs."""
    web.cli("apps", "create", APP, "--tz", ZONE, "--grace", str(GRACE))
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


def wait_drawn(browser, days: int) -> None:
    """Until the page has drawn a report of ``days`` days (the script marks #analytics when done)."""
    def drawn(d) -> bool:
        root = d.find_element(By.ID, "analytics")
        if root.get_attribute("data-state") == "error":
            raise AssertionError(d.find_element(By.ID, "analytics-error").text)
        return root.get_attribute("data-state") == "drawn" and root.get_attribute("data-days") == str(days)

    wait(browser, 30).until(drawn)


def report_as_drawn(web, browser, days: int) -> dict:
    """`analytics report --json` for the page's app and range; should the app's day turn between the
    page's request and this one, the page is reloaded so both cover the same days."""
    for _ in range(2):
        report = json.loads(web.cli("analytics", "report", "--app", APP, "--days", str(days), "--json").stdout)
        root = browser.find_element(By.ID, "analytics")
        if (report["first"], report["last"]) == (root.get_attribute("data-first"), root.get_attribute("data-last")):
            return report
        browser.refresh()
        wait(browser).until(EC.staleness_of(root))  # not the old page's "drawn"
        wait_drawn(browser, days)
    raise AssertionError("the page and the CLI report different ranges")


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
            expected = {d["day"]: d[key] for d in days if d[key] is not None}
            assert expected, f"{chart}/{key}: the seeded range has no {key}"
            assert len(drawn) == len(expected), f"{chart}/{key}: {len(drawn)} marks for {len(expected)} days with data"
            assert {m["day"]: float(m["value"]) for m in drawn} == expected, f"{chart}/{key}"
            assert {m["tag"] for m in drawn} <= {"circle", "rect"}
            assert {m["day"]: m["final"] for m in drawn} == {d["day"]: str(d["final"]).lower() for d in days
                                                            if d[key] is not None}

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

    for table in ("classic", "unbounded"):
        cells = marks(browser, f"#heatmap-{table} svg rect.cell")
        expected = {(c["cohort"], n): share for c in report["retention"] for n, share in c[table].items() if share is not None}
        assert expected and len(cells) == len(expected), table
        assert all(m["table"] == table for m in cells)
        assert {(m["cohort"], m["n"]): float(m["value"]) for m in cells} == expected, table
        gaps = marks(browser, f"#heatmap-{table} svg rect.gap")
        assert len(gaps) == sum(1 for c in report["retention"] for v in c[table].values() if v is None)
        labels = marks(browser, f"#heatmap-{table} svg text.cell-label")
        assert len(labels) == len(cells)
        for m in labels:  # a percentage rounded for display (to 0.1 below 1 %)
            share = expected[(m["cohort"], m["n"])]
            assert abs(float(m["text"].rstrip("%")) - 100 * share) <= 0.5 + 1e-9, (m, share)

    rows = marks(browser, "#numbers tbody tr[data-day]")
    with_data = [d["day"] for d in reversed(days) if any(d[k] is not None for k in TABLE_KEYS)]
    assert [r["day"] for r in rows] == with_data
    blank = len(days) - len(with_data)
    summary = marks(browser, "#numbers tbody tr.no-data")
    assert (summary[0]["text"].startswith(f"{blank} days without data") if blank else not summary), summary
    provisional = [d["day"] for d in days if d["final"] is False]
    assert [r["day"] for r in rows if "not-final" in r["cls"]] == provisional[::-1]
    by_day = {d["day"]: d for d in days}
    numbers = browser.execute_script(NUMBERS_JS)
    assert numbers and all(float(c["value"]) == by_day[c["day"]][c["key"]] for c in numbers)
    assert len(numbers) == sum(1 for d in days for k in TABLE_KEYS if d[k] is not None)


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
    full_page_shot(browser, shot, "analytics")

    Select(browser.find_element(By.ID, "range")).select_by_value("30")
    wait_drawn(browser, 30)
    assert browser.current_url.endswith(f"/analytics/{APP}?days=30")
    report = report_as_drawn(web, browser, 30)
    # 20 seeded days in a 30-day range: the ten days before them are gaps in every chart.
    assert sum(1 for d in report["days"] if d["dau"] is not None) == SEEDED_DAYS
    assert_charts_equal_report(browser, report)
    full_page_shot(browser, shot, "analytics-30-days")
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

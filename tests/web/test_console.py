"""The console in a real headless Chromium against a real `etcdcron web`, real nodes and etcd: login,
the job form, live history, pause, roles' buttons, nodes, cluster levels. Screenshots of every page
go to artifacts/screenshots/."""

from __future__ import annotations

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from .helpers import login, submit_login, wait


def _rows(driver, table: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")


def _attrs(driver, table: str, name: str) -> list[str]:
    """The ``data-<name>`` of every row of ``table``, read in one script: the polling may replace the rows between two reads."""
    return driver.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} tbody tr`)].map((r) => r.dataset[arguments[1]]);", table, name)


def _cells(driver, table: str, name: str) -> dict[str, list[str]]:
    """Each row of ``table`` by its ``data-<name>``: the text of its cells, read in one script."""
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll(`#${arguments[0]} tbody tr`)].map((r) =>"
        " [r.dataset[arguments[1]], [...r.cells].map((c) => c.textContent)]));", table, name)


def _text(driver, css: str) -> str | None:
    """The text of the first ``css`` element (None: there is none), read in one script."""
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e && e.textContent;", css)


def _click(driver, css: str) -> None:
    """Click ``css`` once it is there; the 2 s polling re-renders rows, so a button found a moment ago may be gone."""
    WebDriverWait(driver, 20, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True)


def test_unauthenticated_page_redirects_to_login_and_wrong_password_is_refused(web, browser, shot):
    """A page asked for without a session shows the login form; a wrong password is refused with one line."""
    browser.get(web.url + "/nodes")
    wait(browser).until(EC.presence_of_element_located((By.ID, "login-form")))
    assert "/login?next=/nodes" in browser.current_url
    shot(browser, "login")
    submit_login(browser, web, "admin", "not-the-password", "/login?next=/nodes")
    err = wait(browser).until(EC.visibility_of_element_located((By.ID, "login-error")))
    assert err.text == "wrong user name or password"
    assert not browser.find_elements(By.CSS_SELECTOR, "nav")
    shot(browser, "login-refused")
    submit_login(browser, web, "admin", web.password["admin"], "/login?next=/nodes")
    wait(browser).until(EC.url_to_be(web.url + "/nodes"))
    assert browser.find_element(By.ID, "who").text == "admin"


def test_admin_creates_a_job_sees_runs_live_then_pauses_it(web, web_nodes, browser, shot):
    """A job made through the form (a bad one shows the API's error line) fires on the real nodes; its runs
    appear on the open runs page without a reload and filter by node; pausing it on its page shows paused
    and the API agrees; the jobs page shows its last outcome and outcome strip."""
    web_nodes.start("n1")
    web_nodes.start("n2")
    login(browser, web, "admin")
    browser.find_element(By.CSS_SELECTOR, "#job-form-box summary").click()
    browser.find_element(By.ID, "f-name").send_keys("tick")
    browser.find_element(By.ID, "f-schedule").send_keys("61 * * * *")
    browser.find_element(By.ID, "f-target").send_keys("echo tick from $ETCDCRON_NODE")
    browser.find_element(By.ID, "f-submit").click()
    err = wait(browser).until(EC.visibility_of_element_located((By.ID, "form-error")))
    with web.api("admin") as api:
        r = api.put("/jobs/tick", json={"schedule": "61 * * * *", "shell": "echo tick from $ETCDCRON_NODE"})
        assert r.status_code == 422 and err.text == r.json()["error"]
    shot(browser, "jobs-form-error")
    browser.find_element(By.ID, "f-schedule").clear()
    browser.find_element(By.ID, "f-schedule").send_keys("* * * * * *")
    browser.find_element(By.ID, "f-submit").click()
    wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, '#jobs-table tr[data-job="tick"]')))
    assert browser.find_element(By.ID, "form-error").get_attribute("hidden") is not None
    with web.api("viewer") as api:
        got = api.get("/jobs/tick").json()
        assert (got["kind"], got["target"]) == ("shell", "echo tick from $ETCDCRON_NODE")
    shot(browser, "jobs-form")

    browser.get(web.url + "/runs")
    wait(browser).until(EC.presence_of_element_located((By.ID, "runs-table")))
    first = len(browser.find_elements(By.CSS_SELECTOR, '#runs-table tr[data-job="tick"][data-state="succeeded"]'))
    # no navigation from here on: the page's own polling must bring the new runs in
    wait(browser, 30).until(lambda d: len(d.find_elements(
        By.CSS_SELECTOR, '#runs-table tr[data-job="tick"][data-state="succeeded"]')) >= first + 3)
    shot(browser, "runs")
    node = _attrs(browser, "runs-table", "node")[0]
    browser.find_element(By.ID, "r-node").send_keys(node)
    browser.find_element(By.CSS_SELECTOR, "#runs-filter button").click()
    wait(browser).until(lambda d: set(_attrs(d, "runs-table", "node")) == {node})

    _click(browser, '#runs-table tr[data-job="tick"] a')
    wait(browser).until(EC.visibility_of_element_located((By.ID, "btn-pause"))).click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "job-state"), "paused"))
    wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#history-table pre.tail")))
    assert "tick from n" in _text(browser, "#history-table pre.tail")
    assert len(_rows(browser, "next-table")) == 10
    assert "paused" in wait(browser).until(EC.visibility_of_element_located((By.ID, "next-note"))).text
    with web.api("viewer") as api:
        assert api.get("/jobs/tick").json()["paused"] is True
    shot(browser, "job")

    browser.get(web.url + "/jobs")
    row = '#jobs-table tr[data-job="tick"]'
    wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, f"{row} .strip .sq.st-succeeded")))
    assert _text(browser, f"{row} .job-state") == "paused"
    titles = browser.execute_script("return [...document.querySelectorAll(arguments[0])].map((q) => q.title);", f"{row} .strip .sq")
    assert 3 <= len(titles) <= 20 and "succeeded" in titles and all(titles)
    assert _text(browser, f"{row} .state") == "succeeded"
    shot(browser, "jobs")


def test_viewer_sees_no_mutating_buttons_and_the_api_refuses_it(web, web_nodes, browser, shot):
    """A viewer's pages render no pause/trigger/delete/drain/degrade buttons nor the job form; its API mutation is 403."""
    web.cli("add", "*/5 * * * *", "--name", "report", "--shell", "true")
    web_nodes.start("n1")
    login(browser, web, "viewer")
    wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, '#jobs-table tr[data-job="report"]')))
    assert not browser.find_elements(By.ID, "job-form")
    shot(browser, "jobs-viewer")
    browser.get(web.url + "/jobs/report")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "job-state"), "active"))
    assert browser.find_elements(By.CSS_SELECTOR, "#job-actions button") == []
    browser.get(web.url + "/nodes")
    wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, '#nodes-table tr[data-node="n1"]')))
    assert not browser.find_elements(By.CSS_SELECTOR, "button[data-drain]")
    browser.get(web.url + "/cluster")
    wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, '#levels-table tr[data-level="3"]')))
    assert not browser.find_elements(By.CSS_SELECTOR, "#levels-table button")
    shot(browser, "cluster-viewer")
    # the browser's own session: what a page script of the viewer would get
    status = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/api/v1/jobs/report/pause', {method: 'POST', headers: {'X-CSRF-Token':
            document.querySelector('meta[name="csrf-token"]').content}}).then(r => r.json().then(b => done([r.status, b.error])));""")
    assert status[0] == 403 and "operator" in status[1]
    with web.api("viewer") as api:
        assert api.post("/jobs/report/pause").status_code == 403
        assert api.get("/jobs/report").json()["paused"] is False


def test_nodes_page_shows_live_nodes_and_leader_and_operator_drains(web, web_nodes, browser, shot):
    """The nodes page lists the live nodes with the leader, levels and lease left; an operator's drain takes a node out."""
    web_nodes.start("n1")
    web_nodes.start("n2", "--levels", "1,2")
    login(browser, web, "operator")
    browser.get(web.url + "/nodes")
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#nodes-table tbody tr")) == 2)
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "leader-line"), "leader: n"))
    cells = _cells(browser, "nodes-table", "node")
    assert cells["n2"][2] == "1, 2" and cells["n1"][2] == "1, 2, 3"
    assert all(c[5].endswith(" s") for c in cells.values())
    assert sorted(c[1] for c in cells.values()) == ["leader", "member"]
    shot(browser, "nodes")
    _click(browser, 'button[data-drain="n2"]')
    browser.switch_to.alert.accept()
    wait(browser, 30).until(lambda d: not d.find_elements(By.CSS_SELECTOR, '#nodes-table tr[data-node="n2"]'))


def test_cluster_page_degrades_and_restores_a_level(web, browser, shot):
    """An operator degrades level 3 (and the API shows it) and restores it; then degrades 2 and above with
    their runs killed (the page says so), and restores them, from the cluster page."""
    login(browser, web, "operator")
    browser.get(web.url + "/cluster")
    _click(browser, "#degrade-3")
    wait(browser).until(EC.presence_of_element_located((By.ID, "restore-3")))
    with web.api("viewer") as api:
        got = api.get("/cluster").json()["degraded"]
        assert (got["levels"], got["kill"]) == ([3], False)
    assert _text(browser, "#card-revision .big").isdigit()
    assert not browser.find_element(By.ID, "kill-state").is_displayed()
    _click(browser, "#restore-3")
    wait(browser).until(EC.presence_of_element_located((By.ID, "degrade-3")))
    with web.api("viewer") as api:
        assert api.get("/cluster").json()["degraded"]["levels"] == []

    browser.find_element(By.ID, "degrade-kill").click()
    _click(browser, "#degrade-2")
    wait(browser).until(EC.visibility_of_element_located((By.ID, "kill-state")))
    assert [lvl for lvl, c in _cells(browser, "levels-table", "level").items() if c[1] == "degraded"] == ["2", "3"]
    with web.api("viewer") as api:
        got = api.get("/cluster").json()["degraded"]
        assert (got["levels"], got["kill"]) == ([2, 3], True)
    shot(browser, "cluster")
    _click(browser, "#restore-2")
    wait(browser).until(EC.presence_of_element_located((By.ID, "degrade-3")))
    with web.api("viewer") as api:
        assert api.get("/cluster").json()["degraded"]["levels"] == []


def test_jobs_page_filters_and_sorts(web, browser, shot):
    """Typing in the filter keeps the matching jobs; clicking a header sorts by it, again reverses."""
    for name, level in (("alpha", 3), ("beta", 1), ("gamma", 2)):
        web.cli("add", "0 * * * *", "--name", name, "--level", str(level), "--shell", "true")
    login(browser, web, "viewer")
    wait(browser).until(lambda d: len(_rows(d, "jobs-table")) == 3)
    names = lambda: _attrs(browser, "jobs-table", "job")  # noqa: E731
    assert names() == ["alpha", "beta", "gamma"]
    browser.find_element(By.CSS_SELECTOR, 'th[data-sort="level"]').click()
    assert names() == ["beta", "gamma", "alpha"]
    browser.find_element(By.CSS_SELECTOR, 'th[data-sort="level"]').click()
    assert names() == ["alpha", "gamma", "beta"]
    browser.find_element(By.ID, "job-filter").send_keys("mm")
    assert names() == ["gamma"]
    shot(browser, "jobs-filtered")

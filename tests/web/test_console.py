"""The console in a real headless Chromium against a real `etcdcron web`, real nodes and etcd: login,
the job form, live history, pause, roles' buttons, nodes, cluster levels. Screenshots of every page
go to artifacts/screenshots/."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from .helpers import login, submit_login, wait


def _rows(driver, table: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")


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
    """A job made through the form fires on the real nodes; its runs appear on the open runs page without a
    reload; pausing it on its page shows paused and the API agrees."""
    web_nodes.start("n1")
    web_nodes.start("n2")
    login(browser, web, "admin")
    browser.find_element(By.CSS_SELECTOR, "#job-form-box summary").click()
    browser.find_element(By.ID, "f-name").send_keys("tick")
    browser.find_element(By.ID, "f-schedule").send_keys("* * * * * *")
    browser.find_element(By.ID, "f-target").send_keys("echo tick from $ETCDCRON_NODE")
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

    browser.find_element(By.CSS_SELECTOR, '#runs-table tr[data-job="tick"] a').click()
    wait(browser).until(EC.visibility_of_element_located((By.ID, "btn-pause"))).click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "job-state"), "paused"))
    wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#history-table pre.tail")))
    assert "tick from n" in browser.find_element(By.CSS_SELECTOR, "#history-table pre.tail").text
    assert len(_rows(browser, "next-table")) == 10
    with web.api("viewer") as api:
        assert api.get("/jobs/tick").json()["paused"] is True
    shot(browser, "job")


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
    cells = {r.get_attribute("data-node"): [c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in _rows(browser, "nodes-table")}
    assert cells["n2"][2] == "1, 2" and cells["n1"][2] == "1, 2, 3"
    assert all(c[5].endswith(" s") for c in cells.values())
    assert sorted(c[1] for c in cells.values()) == ["leader", "member"]
    shot(browser, "nodes")
    browser.find_element(By.CSS_SELECTOR, 'button[data-drain="n2"]').click()
    browser.switch_to.alert.accept()
    wait(browser, 30).until(lambda d: not d.find_elements(By.CSS_SELECTOR, '#nodes-table tr[data-node="n2"]'))


def test_cluster_page_degrades_and_restores_a_level(web, browser, shot):
    """An operator degrades level 3 (and the API shows it), then restores it, from the cluster page."""
    login(browser, web, "operator")
    browser.get(web.url + "/cluster")
    wait(browser).until(EC.element_to_be_clickable((By.ID, "degrade-3"))).click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "restore-3")))
    with web.api("viewer") as api:
        assert api.get("/cluster").json()["degraded"]["levels"] == [3]
    assert browser.find_element(By.ID, "card-revision").text.split()[-1].isdigit()
    shot(browser, "cluster")
    browser.find_element(By.ID, "restore-3").click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "degrade-3")))
    with web.api("viewer") as api:
        assert api.get("/cluster").json()["degraded"]["levels"] == []


def test_jobs_page_filters_and_sorts(web, browser, shot):
    """Typing in the filter keeps the matching jobs; clicking a header sorts by it, again reverses."""
    for name, level in (("alpha", 3), ("beta", 1), ("gamma", 2)):
        web.cli("add", "0 * * * *", "--name", name, "--level", str(level), "--shell", "true")
    login(browser, web, "viewer")
    wait(browser).until(lambda d: len(_rows(d, "jobs-table")) == 3)
    names = lambda: [r.get_attribute("data-job") for r in _rows(browser, "jobs-table")]  # noqa: E731
    assert names() == ["alpha", "beta", "gamma"]
    browser.find_element(By.CSS_SELECTOR, 'th[data-sort="level"]').click()
    assert names() == ["beta", "gamma", "alpha"]
    browser.find_element(By.CSS_SELECTOR, 'th[data-sort="level"]').click()
    assert names() == ["alpha", "gamma", "beta"]
    browser.find_element(By.ID, "job-filter").send_keys("mm")
    assert names() == ["gamma"]
    shot(browser, "jobs-filtered")

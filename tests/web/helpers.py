"""Browser steps shared by the console tests."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


def wait(driver, timeout: float = 20) -> WebDriverWait:
    return WebDriverWait(driver, timeout, poll_frequency=0.1)


def submit_login(driver, web, name: str, password: str, path: str = "/login") -> None:
    """Fill in and submit the login form at ``path``."""
    driver.get(web.url + path)
    wait(driver).until(EC.presence_of_element_located((By.ID, "login-form")))
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()


def login(driver, web, role: str, path: str = "/login") -> None:
    """Log in as the fixture's account of ``role`` and wait for the console's navigation."""
    submit_login(driver, web, role, web.password[role], path)
    wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, "nav")))

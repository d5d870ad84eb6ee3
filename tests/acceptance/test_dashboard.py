"""``qdo serve`` (issue 15), for real: the server as a subprocess, a live ``qdo do`` run,
and the dashboard driven in headless Chromium (Debian's chromium and chromedriver,
through Selenium); the REST routes with and without the token."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import qdo
from tests.conftest import need_service, run_qdo

pytestmark = pytest.mark.backends

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, port: int, token: str, proc: subprocess.Popen[str]) -> None:
        self.url, self.token, self.proc = f"http://127.0.0.1:{port}", token, proc

    def call(self, method: str, path: str, body: Any = None, token: str | None = "") -> Any:
        """(status, JSON) of a request; the server's token unless ``token`` is None."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token or self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    token_file = tmp_path / "token"
    argv = [sys.executable, "-m", "qdo", "serve", "--port", str(port), "--token-file",
            str(token_file)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "qdo serve did not come up"
                time.sleep(0.05)
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        yield Server(port, token_file.read_text().strip(), proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()


def test_rest_routes_need_the_token_and_change_nothing_without_it(server: Server) -> None:
    user = qdo.create("R").store.user
    base = f"/{user}/queues"
    before = qdo.connect("R").status()
    refused = [("GET", f"{base}/", None), ("GET", f"{base}/R", None), ("PUT", f"{base}/X", None),
               ("DELETE", f"{base}/R", None), ("PUT", f"{base}/R/pause", None),
               ("POST", f"{base}/R/tasks/", {"command": "echo pwned"}),
               ("POST", f"{base}/R/poptask", None), ("GET", "/api/queues", None)]  # fmt: skip
    for method, path, body in refused:
        for token in (None, "not-the-token"):
            status, out = server.call(method, path, body, token=token)
            assert status == 401 and "token" in out["error"], (method, path, status)
    assert qdo.connect("R").status() == before and [q.name for q in qdo.qlist()] == ["R"]
    # with it: the original web server's routes and meanings
    assert server.call("PUT", f"{base}/New")[0] == 201
    assert server.call("PUT", f"{base}/New")[0] == 409  # exists
    status, added = server.call("POST", f"{base}/R/tasks/", {"commands": ["echo a", "echo b"]})
    assert status == 201 and len(added["ids"]) == 2
    assert server.call("POST", f"{base}/R/addtask/", {"command": "echo c"})[0] == 201
    assert [t["task"] for t in server.call("GET", f"{base}/R/tasks/")[1]] == [
        "echo a", "echo b", "echo c"]  # fmt: skip
    status, popped = server.call("POST", f"{base}/R/poptask")
    assert status == 200 and popped["state"] == "Running" and popped["task"] == "echo a"
    put = server.call("PUT", f"{base}/R/tasks/{popped['id']}", {"state": "Failed", "err": 3})
    assert put == (200, {"id": popped["id"], "state": "Failed"})
    failed = server.call("GET", f"{base}/R/tasks/?state=Failed&exitcode=3")[1]
    assert [t["id"] for t in failed] == [popped["id"]]
    assert server.call("PUT", f"{base}/R/retry")[1] == {"retried": 1}
    assert server.call("PUT", f"{base}/R/pause")[1]["state"] == "Paused"
    assert server.call("PUT", f"{base}/R/resume")[1]["state"] == "Active"
    one = server.call("GET", f"{base}/R/tasks/{popped['id']}")[1]
    assert [a["state"] for a in one["history"]] == ["Failed"] and one["state"] == "Pending"
    assert server.call("GET", f"{base}/R")[1]["ntasks"]["Pending"] == 3
    assert server.call("GET", f"{base}/Nope")[0] == 404
    assert server.call("GET", f"{base}/R/tasks/x")[0] == 400
    assert server.call("DELETE", f"{base}/New")[0] == 200
    assert {q["name"] for q in server.call("GET", f"{base}/")[1]} == {"R"}
    # the original's login: a form POST that sets the cookie
    req = urllib.request.Request(server.url + "/site/login", method="POST",
                                 data=f"username=me&password={server.token}".encode())  # fmt: skip
    with urllib.request.urlopen(req) as r:
        cookie = r.headers["Set-Cookie"]
        assert json.loads(r.read())["qdo_authkey"] == server.token
    assert cookie.startswith(f"qdo_authkey={server.token}")
    req = urllib.request.Request(server.url + f"{base}/R", headers={"Cookie": cookie.split(";")[0]})
    with urllib.request.urlopen(req) as r:
        assert json.loads(r.read())["name"] == "R"


def test_hostile_requests_get_a_4xx_and_change_nothing(server: Server) -> None:
    # each of these was a 500 with a traceback in the server's log, or worse
    user = qdo.create("H").store.user
    base = f"/{user}/queues/H"
    qdo.connect("H").add("echo a")
    before = [t.to_dict() for t in qdo.connect("H").tasks()]
    huge = str(2**63)
    for method, path, body in [
        ("GET", f"{base}/tasks/{huge}", None),
        ("PUT", f"{base}/tasks/{huge}", {"state": "Failed"}),
        ("GET", f"{base}/tasks/?after={huge}", None),
        ("GET", f"{base}/tasks/?exitcode={huge}", None),
        ("GET", f"{base}/tasks/?exitcode={2**31}", None),  # (just past 32 bits)
        ("POST", f"{base}/launch", {"bogus": 1}),
        ("POST", f"{base}/launch", {"nworkers": 1, "batchopts": 5, "profile": "local"}),
        # (what qdo do refuses: the job died at once, its tasks left Pending)
        ("POST", f"{base}/launch", {"nworkers": 2000, "profile": "local"}),
        ("POST", f"{base}/launch", {"nworkers": 1, "jobs": 10**6, "profile": "local"}),
    ]:
        status, out = server.call(method, path, body)
        assert status == 400 and out["error"], (method, path, status, out)
    deep = b"[" * 100_000 + b"]" * 100_000
    req = urllib.request.Request(server.url + f"{base}/tasks/", data=deep, method="POST",
                                 headers={"Authorization": f"Bearer {server.token}"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400 and b"too deep" in err.value.read()
    # a body too big is refused as it comes, without the token too (the login read all
    # of it first: 300 MB of it took the server from 41 to 655 MB)
    port = int(server.url.rsplit(":", 1)[1])
    for path, head, body in (
        ("/site/login", "Content-Length: 300000000", b"x" * 65536),  # (said at once)
        ("/site/login", "Transfer-Encoding: chunked", (b"1000\r\n" + b"x" * 4096 + b"\r\n") * 2),
        (f"{base}/tasks/", f"Content-Length: {(64 << 20) + 1}", b"x" * 65536),
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            auth = f"Authorization: Bearer {server.token}"
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n{auth}\r\n\r\n"
                         .encode() + body)  # fmt: skip
            assert sock.recv(100).startswith(b"HTTP/1.1 413 "), (path, head)
    # the cookie goes with a form that a page of another port of this host posts here
    # (the same site to a browser): a change must come from this server's own page
    cookie = f"qdo_authkey={server.token}"
    here = server.url.rstrip("/").split("://", 1)[1]  # (host:port)
    for origin, want in (("http://127.0.0.1:1", 403), ("null", 403),
                         (f"http://evil.example/{here}", 403), (server.url, 201),
                         (f"https://{here}", 201)):  # (this page, through a TLS proxy)  # fmt: skip
        req = urllib.request.Request(server.url + f"{base}/tasks/", method="POST",
                                     data=b'{"command": "echo from a page"}',
                                     headers={"Cookie": cookie, "Origin": origin,
                                              "Content-Type": "text/plain"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        assert status == want, origin
    after = [t.to_dict() for t in qdo.connect("H").tasks()]
    assert after[:-2] == before and [t["task"] for t in after[-2:]] == ["echo from a page"] * 2
    assert server.proc.poll() is None and server.call("GET", base)[0] == 200


def test_a_token_file_that_does_not_read_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "binary").write_bytes(b"\xff\xfe\xfa")
    for path, why in ((tmp_path / "binary", "it is not text"), (tmp_path, "Is a directory")):
        proc = run_qdo("serve", "--port", "1", "--token-file", str(path), timeout=60)
        assert proc.returncode == 1 and proc.stderr.splitlines() == [
            f"qdo: error: cannot read the token from {path}: {why}"], proc.stderr  # fmt: skip


def test_serve_where_it_cannot_listen_says_so_in_one_line(tmp_path: Path) -> None:
    # (it printed the token, then uvicorn's own ERROR line, and exited 3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_qdo("serve", "--port", str(port), "--token-file", str(tmp_path / "t"),
                       timeout=60)  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == "", (proc.returncode, proc.stdout)
    assert proc.stderr.splitlines() == [
        f"qdo: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (CHROMIUM and DRIVER):
        need_service("chromium", "no chromium and chromedriver on PATH (apt-get install "
                                 "chromium chromium-driver)")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1600", f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Callable[[], Any], what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            got = check()
        except Exception:  # (an element not there yet, say)
            got = None
        if got:
            return got
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_the_dashboard_follows_a_live_run(server: Server, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    fixed = tmp_path / "fixed"
    q = qdo.create("Live")
    q.add_multiple([f"sleep 0.0{i % 5}" for i in range(600)])
    bad = q.add_multiple([f"test -e {fixed} || {{ echo 'cannot open input {i}' >&2; exit 7; }}"
                          for i in range(3)])  # fmt: skip
    shots = Path(os.environ.get("QDO_TEST_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    browser.get(f"{server.url}/#token={server.token}")
    wait_for(lambda: browser.find_element(By.ID, "queues"), "the list of queues")
    assert "Live" in browser.find_element(By.ID, "queues").text
    browser.get(f"{server.url}/#/q/Live")

    def succeeded() -> int:
        cell = browser.find_element(By.CSS_SELECTOR, '[data-state="Succeeded"] .n')
        return int(cell.text.replace(",", ""))

    def points() -> int:
        return int(browser.find_element(By.ID, "chart").get_attribute("data-points") or 0)

    wait_for(lambda: browser.find_element(By.ID, "counts"), "the queue's counts")
    assert succeeded() == 0
    agent = subprocess.Popen([sys.executable, "-m", "qdo", "do", "Live", "--workers", "2"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        # the counts and the throughput chart move while the tasks run (without a reload)
        first = wait_for(lambda: succeeded() or None, "no task shown Succeeded")
        wait_for(lambda: succeeded() > first, "the Succeeded count does not move")
        wait_for(lambda: points() >= 3, "the chart gets no points")
        chart_before = points()
        wait_for(lambda: points() > chart_before, "the chart does not move")
        browser.save_screenshot(str(shots / "dashboard-running.png"))
        # the failures form one group, with its log line
        group = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, ".group"),
                         "no failure group")  # fmt: skip
        what = "a group of the three failures"
        wait_for(lambda: "3" in group.find_element(By.TAG_NAME, "b").text
                 and "cannot open input N" in group.text, what)  # fmt: skip
        agent.wait(timeout=300)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    browser.save_screenshot(str(shots / "dashboard-failures.png"))
    assert [qdo.connect("Live").tasks(id=i).state.value for i in bad] == ["Failed"] * 3
    # "retry this group" brings them back; fixed, they run to the end
    fixed.touch()
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, ".retry-group"), "no retry button")
    browser.find_element(By.CSS_SELECTOR, ".retry-group").click()
    wait_for(lambda: all(qdo.connect("Live").tasks(id=i).state.value == "Pending" for i in bad),
             "the group's tasks are not Pending again")  # fmt: skip
    subprocess.run([sys.executable, "-m", "qdo", "do", "Live"], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    wait_for(lambda: succeeded() == 603, "the retried tasks are not shown Succeeded")
    wait_for(lambda: "none" in browser.find_element(By.ID, "groups").text, "groups stay")
    # a task's page: payload, attempts (with what they used), the end of its log
    browser.get(f"{server.url}/#/q/Live/t/{bad[0]}")
    wait_for(lambda: browser.find_element(By.ID, "history"), "the task page")
    history = browser.find_element(By.ID, "history").text
    assert "Failed" in history and "Succeeded" in history
    assert "cannot open input 0" in browser.find_element(By.ID, "log").text
    browser.save_screenshot(str(shots / "dashboard-task.png"))

"""Every command's ``--json`` output against its documented schema (``docs/schemas``,
``docs/json.md``), on both backends, from real runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import qdo
from tests.conftest import run_qdo

pytestmark = pytest.mark.backends

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def check(name: str, value: Any) -> None:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())


def out(*args: str, code: int = 0) -> Any:
    proc = run_qdo(*args)
    assert proc.returncode == code, proc.stderr
    return json.loads(proc.stdout)


def test_every_json_output_matches_its_schema(tmp_path: Path) -> None:
    q = qdo.create("J")
    ok = q.add_multiple(["true"] * 5)
    q.add("exit 3")
    q.add("true", requires=[ok[0]])
    run_qdo("do", "J", check=True)
    q.add("echo later")  # left to run, for the plan
    check("list", out("list", "--json"))
    check("list", out("status", "--json"))
    check("status", out("status", "J", "--json"))
    lines = run_qdo("tasks", "J", "--json", "--verbose", check=True).stdout.splitlines()
    assert len(lines) == 8
    for line in lines:
        check("tasks", json.loads(line))
    check("stats", out("stats", "J", "--json"))
    groups = out("why", "J", "--json")
    assert len(groups) == 1
    check("why", groups)
    check("wait", out("wait", "J", "--json", "--timeout", "0.1", code=124))
    check("jobs", out("jobs", "J", "--json"))  # none launched
    qdo.create("Launched").add("true")
    run_qdo("launch", "Launched", "1", "--profile", "local", check=True)
    deadline = time.monotonic() + 120
    while (launched := out("jobs", "Launched", "--json"))[0]["state"] != "ENDED":
        assert time.monotonic() < deadline, launched
        time.sleep(0.1)
    check("jobs", launched)
    agent = subprocess.Popen([sys.executable, "-m", "qdo", "do", "J", "--wait"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (live := out("agents", "J", "--json")):
            assert time.monotonic() < deadline, "the agent never said it was alive"
            time.sleep(0.05)
        check("agents", live)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
    check("wait", out("wait", "J", "--json", code=1))  # the exit 3 failed
    # a schema that would let anything through checks nothing: each one holds its keys
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        body = schema.get("items", schema)
        assert body.get("additionalProperties") is False and body.get("required"), path.name

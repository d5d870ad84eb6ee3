"""The web application of ``qdo serve`` (Starlette): the dashboard's page and JSON, and
the REST routes of the original QDO web server, with its meanings:

=======================================================  ===============================
``GET  /{user}/queues/``                                  the user's queues and counts
``GET  /{user}/queues/{queue}``                           a queue's status
``PUT  /{user}/queues/{queue}``                           create it
``PUT  /{user}/queues/{queue}/retry|recover|pause|resume``  as ``qdo retry`` and so on
``DELETE /{user}/queues/{queue}``                         delete it and its tasks
``POST /{user}/queues/{queue}/launch``                    ``{"nworkers": N, "jobs": J, ...}``
``GET  /{user}/queues/{queue}/tasks/?state=&exitcode=``   a page of tasks (``after``,
                                                          ``limit`` up to 1,000)
``POST /{user}/queues/{queue}/tasks/`` (or ``addtask/``)  ``{"command": ...}`` or
                                                          ``{"commands": [...]}``
``GET  /{user}/queues/{queue}/tasks/{id}``                a task, with its history
``PUT  /{user}/queues/{queue}/tasks/{id}``                ``{"state": ..., "err": ...,
                                                          "message": ...}``
``POST /{user}/queues/{queue}/poptask``                   the next task, Running, held
                                                          under a lease (report it with
                                                          the PUT above before it ends)
=======================================================  ===============================

The dashboard (``GET /``) reads ``/api/...``: every figure it shows comes from one
aggregate query (a queue's counts) or a page of rows; rates and ETAs come from the
counts this server saw over time.  Blocking work runs in Starlette's thread pool, and
each thread has its own database connection.
"""

from __future__ import annotations

__all__ = ["make_app", "new_token", "serve"]

import hmac
import json
import secrets
import threading
import time
from collections import deque
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .. import api, triage
from ..errors import InvalidInput, NotAllowed, QdoError, QueueExists, UnknownQueue, UnknownTask
from ..models import INT32_MAX, INT32_MIN, INT64_MAX, State, Task
from ..queue import left_to_run

#: The longest page of tasks one request returns.
PAGE = 1000
#: Seconds of counts a queue's rate and chart remember.
HISTORY = 600.0
#: Seconds between two samples of a queue's counts (a refresh in between reuses one).
SAMPLE = 0.5
#: How many failure groups a queue's page shows (the largest).
GROUPS = 20
#: The largest body a request may send, bytes (a login's: LOGIN_BODY): a bigger one is
#: refused as it arrives, before it fills the server's memory.
MAX_BODY = 64 << 20
LOGIN_BODY = 4096
#: Methods that change nothing (no Origin check for them).
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


class _TooLarge(Exception):
    pass


async def _read(request: Request, limit: int) -> bytes:
    """The request's body, or _TooLarge once it passes ``limit`` bytes."""
    said = request.headers.get("content-length") or "0"
    if said.isdigit() and int(said) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"error": f"the request's body is larger than {limit:,} bytes"}, 413)


def new_token() -> str:
    return secrets.token_urlsafe(24)


class _Auth(BaseHTTPMiddleware):
    """Every route but the page itself and the login needs the token."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token.encode()

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path in ("/", "/site/login", "/favicon.ico"):
            return await call_next(request)
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        cookie = not token
        token = token or request.cookies.get("qdo_authkey", "")
        if not hmac.compare_digest(token.encode(), self.token):
            return JSONResponse({"error": "this needs the server's token (Authorization: "
                                          "Bearer TOKEN, or POST /site/login)"},
                                status_code=401)  # fmt: skip
        # a browser sends the cookie with a form another page posts here, and a page of
        # another port of this host is the same site to it: a change must come from ours,
        # this host and port (by http or https: behind a TLS proxy that forwards the Host,
        # the page is https and the request that reaches here http)
        origin = request.headers.get("origin")
        if (cookie and request.method not in SAFE and origin is not None
                and urlsplit(origin).netloc != request.headers.get("host", "")):  # fmt: skip
            return JSONResponse({"error": f"a change from a page of {origin} is refused: "
                                          "only this server's own pages may"},
                                status_code=403)  # fmt: skip
        return await call_next(request)


class _Rates:
    """What a server saw of a queue's counts over time: the chart's points, the rate
    and the ETA."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples: dict[tuple[str, str], deque[tuple[float, int, int]]] = {}

    def add(self, key: tuple[str, str], succeeded: int, ended: int) -> list[tuple[float, int, int]]:
        now = time.time()
        with self.lock:
            seen = self.samples.setdefault(key, deque())
            if not seen or now - seen[-1][0] >= SAMPLE:
                seen.append((now, succeeded, ended))
            while seen and now - seen[0][0] > HISTORY:
                seen.popleft()
            return list(seen)


def _rate(points: list[tuple[float, int, int]], seconds: float) -> float | None:
    """Tasks ended per second over the last ``seconds`` (None: too few samples)."""
    if len(points) < 2:
        return None
    end = points[-1]
    start = next((p for p in points if end[0] - p[0] <= seconds), points[0])
    if end[0] - start[0] < 1.0:
        return None
    return max(0.0, (end[2] - start[2]) / (end[0] - start[0]))


def _json(obj: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(obj, status_code=status)


def _error(e: Exception) -> JSONResponse:
    status = (404 if isinstance(e, (UnknownQueue, UnknownTask))
              else 409 if isinstance(e, QueueExists)
              else 403 if isinstance(e, NotAllowed)
              else 400)  # fmt: skip
    return _json({"error": str(e)}, status)


def _task(t: Task) -> dict[str, Any]:
    return t.to_dict()


def make_app(token: str) -> Starlette:
    """The application, for ``token``."""
    rates = _Rates()

    def queue(request: Request) -> api.Queue:
        user = request.path_params.get("user") or request.query_params.get("user") or None
        return api.connect(request.path_params["queue"], user=user)

    def guarded(fn: Any) -> Any:
        def endpoint(request: Request) -> Response:
            try:
                return fn(request)  # type: ignore[no-any-return]
            except QdoError as e:
                return _error(e)

        return endpoint

    async def body(request: Request) -> dict[str, Any]:
        raw = await _read(request, MAX_BODY)
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InvalidInput("the request's body is not JSON") from None
        except ValueError as e:  # (a number of more digits than Python reads)
            raise InvalidInput(f"the request's body is not JSON qdo reads: {e}") from None
        except RecursionError:
            raise InvalidInput("the request's body nests lists or objects too deep") from None
        if not isinstance(data, dict):
            raise InvalidInput("the request's body must be a JSON object")
        return data

    def with_body(fn: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                data = await body(request)
            except QdoError as e:
                return _error(e)
            except _TooLarge:
                return _too_large(MAX_BODY)
            from starlette.concurrency import run_in_threadpool

            return await run_in_threadpool(guarded(lambda r: fn(r, data)), request)

        return endpoint

    # -- the page and the login ----------------------------------------------------------
    def page(request: Request) -> Response:
        html = resources.files("qdo.web").joinpath("dashboard.html").read_text()
        return HTMLResponse(html)

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return _json({"login": "POST username and password (the server's token)"})
        # a form (urlencoded, as the original's clients send) or JSON
        try:
            raw = (await _read(request, LOGIN_BODY)).decode("utf-8", "replace")
        except _TooLarge:
            return _too_large(LOGIN_BODY)
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                loaded = json.loads(raw)
            except json.JSONDecodeError:
                loaded = None
            form = {k: str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        else:
            form = {k: v[0] for k, v in parse_qs(raw).items()}
        given = str(form.get("password") or "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return _json({"error": "wrong token"}, 401)
        username = str(form.get("username") or "")
        out = _json({"qdo_authkey": token, "qdo_username": username})
        out.set_cookie("qdo_authkey", token, httponly=True, samesite="strict")
        out.set_cookie("qdo_username", username, samesite="strict")
        return out

    # -- REST: the original's routes ------------------------------------------------------
    def queues(request: Request) -> Response:
        user = request.path_params.get("user") or None
        return _json([{"name": q.name, **(q.listed or {})} for q in api.qlist(user=user)])

    def queue_status(request: Request) -> Response:
        return _json(queue(request).status())

    def queue_create(request: Request) -> Response:
        user = request.path_params.get("user") or None
        q = api.create(request.path_params["queue"], user=user)
        return _json(q.status(), 201)

    def queue_delete(request: Request) -> Response:
        queue(request).delete()
        return _json({"deleted": request.path_params["queue"]})

    def queue_action(request: Request) -> Response:
        q, action = queue(request), request.path_params["action"]
        if action == "retry":
            return _json({"retried": q.retry()})
        if action == "recover":
            return _json({"recovered": q.recover()})
        if action == "pause":
            q.pause()
        elif action == "resume":
            q.resume()
        else:
            return _json({"error": f"no action {action!r}"}, 404)
        return _json(q.status())

    def launch(request: Request, data: dict[str, Any]) -> Response:
        q = queue(request)
        options = dict(data)
        nworkers = options.pop("nworkers", 1)
        jobs = options.pop("jobs", 1)
        return _json({"jobs": q.launch(nworkers, jobs, **options)}, 201)

    def tasks(request: Request) -> Response:
        q, p = queue(request), request.query_params
        try:
            limit = min(PAGE, int(p.get("limit", 100)))
            after = int(p.get("after", 0))
            exitcode = int(p["exitcode"]) if p.get("exitcode") else None
            if not 0 <= after <= INT64_MAX or exitcode is not None and not (
                    INT32_MIN <= exitcode <= INT32_MAX):  # fmt: skip
                raise ValueError
        except ValueError:
            raise InvalidInput("limit, after and exitcode are numbers (after: a task id, "
                               "exitcode: a 32-bit integer)") from None  # fmt: skip
        state = State.parse(p["state"]) if p.get("state") else None
        rows = q.store.tasks(q.name, state, after=after, limit=max(1, limit),
                             exitcode=exitcode)  # fmt: skip
        return _json([_task(t) for t in rows])

    def add_tasks(request: Request, data: dict[str, Any]) -> Response:
        q = queue(request)
        priority = data.get("priority", 0)
        if "commands" in data:
            commands = data["commands"]
            if not isinstance(commands, list):
                raise InvalidInput("commands must be a list")
            return _json({"ids": q.add_multiple(commands, priorities=priority)}, 201)
        if "command" not in data:
            raise InvalidInput('the body needs "command" (one task) or "commands" (many)')
        return _json({"id": q.add(data["command"], priority=priority)}, 201)

    def task(request: Request) -> Response:
        q = queue(request)
        t = q.tasks(id=_id(request), history=True)
        out = _task(t)
        out["log_tail"] = triage.log_tail(t.log, 50, q.settings.log_dir)
        return _json(out)

    def set_task(request: Request, data: dict[str, Any]) -> Response:
        q = queue(request)
        if "state" not in data:
            raise InvalidInput('the body needs "state"')
        state = q.set_task_state(_id(request), data["state"], data.get("err"), data.get("message"))
        return _json({"id": _id(request), "state": state.value})

    def poptask(request: Request) -> Response:
        q = queue(request)
        client = request.client.host if request.client else "?"
        got = q.store.claim(q.name, f"http:{client}", 1, q.settings.lease)
        return _json(_task(got[0]) if got else None)

    # -- the dashboard's figures -----------------------------------------------------------
    def overview(request: Request) -> Response:
        return _json([{"name": q.name, **(q.listed or {})} for q in api.qlist(all_users=True)])

    def details(request: Request) -> Response:
        q = queue(request)
        status = q.status()
        n = status["ntasks"]
        ended = n["Succeeded"] + n["Failed"] + n["Killed"]
        points = rates.add((q.store.user, q.name), n["Succeeded"], ended)
        left = left_to_run(status)
        now_rate = _rate(points, 30)
        spread = [r for r in (_rate(points, s) for s in (10, 30, 120, 600)) if r]
        eta = None
        if left and now_rate:
            eta = {"seconds": left / now_rate,
                   "low": left / max(spread), "high": left / min(spread)}  # fmt: skip
        agents = q.store.agents(q.name)
        running = q.store.tasks(q.name, State.RUNNING, limit=PAGE)  # (an index range)
        started = sum(1 for t in running if t.started)
        return _json({
            **status, "user": q.store.user, "left": left, "rate": now_rate, "eta": eta,
            "chart": [[round(t, 3), s, e] for t, s, e in points],
            "slots": sum(a.slots for a in agents), "started": started,
            "agents": [{"worker": a.worker, "host": a.host, "slots": a.slots, "hand": a.hand,
                        "jobid": a.jobid, "seen": a.seen} for a in agents],
            "jobs": [{"jobid": j.jobid, "profile": j.profile, "workers": j.workers,
                      "submitted": j.submitted} for j in q.store.jobs(q.name)],
            "groups": [{"group": g.id, "count": g.count, "signature": g.signature,
                        "examples": g.examples, "lines": g.lines}
                       for g in triage.failure_groups(q, limit=GROUPS)],
            "running": [_task(t) for t in running if t.started][:20],
        })  # fmt: skip

    def retry_group(request: Request) -> Response:
        q = queue(request)
        return _json({"retried": triage.retry_groups(q, [request.path_params["group"]])})

    base = "/{user}/queues/{queue}"
    routes = [
        Route("/", page),
        Route("/site/login", login, methods=["GET", "POST"]),
        Route("/api/queues", guarded(overview)),
        Route("/api/queues/{queue}", guarded(details)),
        Route("/api/queues/{queue}/tasks/{id}", guarded(task)),
        Route("/api/queues/{queue}/groups/{group}/retry", guarded(retry_group), methods=["POST"]),
        Route("/{user}/queues/", guarded(queues)),
        Route(base, guarded(queue_status)),
        Route(base, guarded(queue_create), methods=["PUT"]),
        Route(base, guarded(queue_delete), methods=["DELETE"]),
        Route(base + "/launch", with_body(launch), methods=["POST"]),
        Route(base + "/tasks/", guarded(tasks)),
        Route(base + "/tasks/", with_body(add_tasks), methods=["POST"]),
        Route(base + "/addtask/", with_body(add_tasks), methods=["POST"]),
        Route(base + "/tasks/{id}", guarded(task)),
        Route(base + "/tasks/{id}", with_body(set_task), methods=["PUT"]),
        Route(base + "/poptask", guarded(poptask), methods=["POST"]),
        Route(base + "/{action}", guarded(queue_action), methods=["PUT"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_Auth, token=token)])


def _id(request: Request) -> int:
    try:
        task_id = int(request.path_params["id"])
        if not 1 <= task_id <= INT64_MAX:
            raise ValueError
    except ValueError:
        raise InvalidInput(f"a task id is a number from 1 to 2**63 - 1, got "
                           f"{request.path_params['id']!r}") from None  # fmt: skip
    return task_id


def serve(host: str, port: int, token: str, say: Any = print) -> None:
    """Run the server until interrupted; InvalidInput, before a word of the token, if
    it cannot listen there (the port is taken, the host is not this machine's)."""
    import socket

    import uvicorn

    sock = None
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        if sock is not None:
            sock.close()
        raise InvalidInput(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    say(f"qdo serve: http://{host}:{port}/#token={token}")
    say(f"  token: {token} (Authorization: Bearer TOKEN)")
    uvicorn.Server(uvicorn.Config(make_app(token), log_level="warning")).run(sockets=[sock])

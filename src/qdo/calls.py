"""Python calls as durable tasks: what a durable executor (``qdo.executor``) stores,
and what an agent's function worker process runs.

A call is pickled as ``(function, args, kwargs)``: by reference where the function can
be imported by name (``module.qualname``), which costs nothing and ties the call to
the code the agents have; with cloudpickle (``pip install 'qdo-queue[cloud]'``)
otherwise, i.e. for functions of the running script (``__main__``), lambdas and
closures, which then travel by value.  A result is pickled the same way, and kept in
the database up to ``MAX_RESULT_BYTES``; a larger one fails its call with a clear
error.  An exception raised by a call comes back as itself, with the traceback of the
worker process as its ``__cause__`` (``RemoteTraceback``); one that cannot be pickled
comes back as a ``RemoteError`` saying what it was.

A call that returns a generator (a generator function's call) streams: the worker
process sends each item as it is yielded (``run_items``), the agent writes it to the
database at once (item 0, 1, ...), and the call's own result is ``Yielded(n)``, how many
there were; a driver's future of it gives the list of items in the end, and ``f[i]``
is the future of item i, done as soon as it is written.

A call's key (``call_key``) is a hash of its pickle: the same function with equal
arguments has the same key, in this run and the next, so a driver run again finds the
calls it made before.  (Arguments whose pickle varies from run to run, such as sets
of strings under hash randomization, make new keys: pass ``key=`` for those.)
"""

from __future__ import annotations

import hashlib
import io
import pickle
import reprlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from .errors import InvalidInput, QdoError, RemoteTraceback, error_text

__all__ = ["MAX_RESULT_BYTES", "RemoteError", "ResultTooLarge", "Yielded", "call_key",
           "decode_result", "Refs", "describe", "encode_call", "encode_error", "encode_result",
           "result_ref", "run_call", "run_items", "value_ref", "whole_result"]  # fmt: skip

#: what stands for another call's result in a call's pickle: ("qdo.result", task id)
_RESULT_REF = "qdo.result"
#: and for a value the driver has already (a generator's item): ("qdo.value", its pickle)
_VALUE_REF = "qdo.value"

#: The largest result (pickled) kept in the database: 64 MiB.  Larger data belongs in
#: files, with their names as the result.
MAX_RESULT_BYTES = 64 << 20
_PROTOCOL = 5
_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 40, 40, 4, 4


class RemoteError(QdoError):
    """An exception raised by a call that could not be pickled back: its type and
    message, as text."""


class ResultTooLarge(QdoError):
    """A call's result is larger than the database keeps (``MAX_RESULT_BYTES``)."""


class Yielded(NamedTuple):
    """What a call that returned a generator stores as its result: how many items the
    generator yielded (they are stored one by one, as they came)."""

    items: int


def run_items(out: Iterator[Any], send: Callable[[int, bytes], None]) -> Yielded:
    """Run a call's generator to its end, sending each item (its index and pickle) as
    soon as it is yielded; what the call's result is then."""
    n = 0
    for item in out:
        send(n, encode_result(item, what=f"item {n} of the generator"))
        n += 1
    return Yielded(n)


def encode_call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
    refer: Callable[[Any], Any] | None = None,
) -> tuple[bytes, list[Any]]:  # fmt: skip
    """The pickle of a call (by reference where possible, else with cloudpickle), and
    the objects in it that ``refer`` named: for each object, ``refer`` returns what
    stands for it in the pickle, or None to pickle it as usual."""
    found: list[Any] = []
    persistent_id = None
    if refer is not None:
        named = refer

        def persistent_id(obj: Any) -> Any:
            pid = named(obj)
            if pid is not None:
                found.append(obj)
            return pid

    data = _dumps((fn, args, kwargs), by_value=getattr(fn, "__module__", None) == "__main__",
                  what=f"the call of {describe_fn(fn)}", persistent_id=persistent_id)  # fmt: skip
    if len(data) > MAX_RESULT_BYTES:  # (what a result may be, a call may be)
        raise InvalidInput(f"the call of {describe_fn(fn)} is {len(data):,} bytes pickled, more "
                           f"than the {MAX_RESULT_BYTES:,} that the database keeps: write "
                           "large data to a file and pass its name")  # fmt: skip
    # (each once, and once only if the pickle by reference failed and cloudpickle's ran)
    return data, list({id(x): x for x in found}.values())


def whole_result(data: bytes, items: list[tuple[int, bytes]]) -> bytes:
    """The pickle of what a call returned, given its stored result and items: for a call
    that returned a generator (its result a ``Yielded``), the list of its items."""
    if not items and not (len(data) < 200 and b"Yielded" in data):
        return data
    try:
        value = pickle.loads(data)
    except Exception:
        return data  # (its unpickling fails where it is used, with the usual message)
    if not isinstance(value, Yielded):
        return data
    got = dict(items)
    return pickle.dumps([pickle.loads(got[i]) for i in range(value.items) if i in got],
                        _PROTOCOL)  # fmt: skip


def result_ref(task_id: int) -> tuple[str, int]:
    """What stands for the result of call ``task_id`` in the pickle of another call."""
    return (_RESULT_REF, task_id)


def value_ref(value: Any) -> tuple[str, bytes]:
    """What stands for ``value`` (one the driver holds, such as a generator's item) in
    the pickle of a call: the value itself, pickled apart."""
    return (_VALUE_REF, _dumps(value, by_value=False, what="a generator's item"))


def call_key(call: bytes) -> str:
    """The default key of a call (see the module's docstring)."""
    return hashlib.sha256(call).hexdigest()[:32]


def describe_fn(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else name


def describe(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """How a call reads, for people (``qdo tasks``): short, whatever its arguments."""
    parts = [_REPR.repr(a) for a in args[:6]] + [f"{k}={_REPR.repr(v)}"
                                                  for k, v in list(kwargs.items())[:6]]  # fmt: skip
    if len(args) > 6 or len(kwargs) > 6:
        parts.append("...")
    return f"{describe_fn(fn)}({', '.join(parts)})"[:400]


def run_call(call: bytes | tuple[bytes, dict[int, bytes]]) -> Any:
    """Run a pickled call (in a function worker process of an agent): the call alone,
    or with the results it refers to (pickled, by task id)."""
    refs: dict[int, bytes] = {}
    if isinstance(call, tuple):
        call, refs = call
    try:
        fn, args, kwargs = _Loader(io.BytesIO(call), refs).load()
    except RemoteError:
        raise
    except Exception as e:
        raise RemoteError(f"cannot unpickle the call ({error_text(e)}): the agents "
                          "need the code it was made with (and cloudpickle, for a function "
                          "of the driver's script)") from e  # fmt: skip
    return fn(*args, **kwargs)


def encode_result(value: Any, limit: int = MAX_RESULT_BYTES, what: str = "the result") -> bytes:
    data = _dumps(value, by_value=False, what=what)
    if len(data) > limit:
        raise ResultTooLarge(
            f"{what} is {len(data):,} bytes pickled, more than the {limit:,} that the "
            "database keeps: write large data to a file and return its name"
        )
    return data


def encode_error(error: BaseException, trace: str) -> bytes:
    """The pickle of an exception a call raised, with the worker's traceback and its
    text: the exception in a pickle of its own, so that a driver that cannot rebuild it
    (its class takes other arguments than it pickles, say) still tells what it was."""
    text = error_text(error)
    try:
        inner = _dumps(error, by_value=False, what="the exception")
    except QdoError:
        inner = pickle.dumps(RemoteError(text), _PROTOCOL)
    return pickle.dumps((inner, trace, text), _PROTOCOL)


def decode_result(ok: bool, data: bytes, what: str | None = None) -> tuple[bool, Any]:
    """A call's result as stored, and whether it is one: ``(True, value)``, or
    ``(False, exception)`` for the exception to raise (its ``__cause__`` the remote
    traceback), which is a RemoteError for a result or an exception that does not unpickle
    here.  ``what``: what the data is, for that message (default: the result, or the
    exception)."""
    try:
        loaded = pickle.loads(data)
    except Exception as e:
        what = what or ("result" if ok else "exception")
        return False, RemoteError(f"cannot unpickle the call's {what} here "
                                  f"({error_text(e)})")  # fmt: skip
    if ok:
        return True, loaded
    if len(loaded) == 2:  # (as an earlier qdo stored them: the exception and its trace)
        error, trace = loaded
    else:
        inner, trace, text = loaded
        try:
            error = pickle.loads(inner)
        except Exception as e:
            error = RemoteError(f"{text} (it cannot be rebuilt here: {error_text(e)})")
    error.__cause__ = RemoteTraceback(trace)
    return False, error


class Refs:
    """An agent's store of the results that its calls take by reference: read from the
    database once each (``fetch``: task ids to pickled results, those that exist), and
    kept, the most recently used first, up to ``limit`` bytes (a result never changes)."""

    def __init__(self, fetch: Callable[[list[int]], dict[int, bytes]], limit: int = 256 << 20):
        self.fetch = fetch
        self.limit = limit
        self.kept: OrderedDict[int, bytes] = OrderedDict()
        self.size = 0

    def get(self, wanted: Iterable[int]) -> dict[int, bytes]:
        """The results of these calls (those that exist), with one fetch for the ones
        not kept."""
        ids = set(wanted)
        missing = sorted(i for i in ids if i not in self.kept)
        got = self.fetch(missing) if missing else {}
        out = {}
        for i in ids:
            data = self.kept.get(i)
            if data is not None:
                self.kept.move_to_end(i)
            elif (data := got.get(i)) is not None:
                self.kept[i] = data
                self.size += len(data)
            else:
                continue
            out[i] = data
        while self.size > self.limit and len(self.kept) > len(out):
            _, data = self.kept.popitem(last=False)
            self.size -= len(data)
        return out


class _Loader(pickle.Unpickler):
    """Unpickles a call, with the results it refers to in place of their references."""

    def __init__(self, file: io.BytesIO, refs: dict[int, bytes]) -> None:
        super().__init__(file)
        self.refs = refs

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) == 2 and pid[0] == _VALUE_REF:
            return pickle.loads(pid[1])
        if not (isinstance(pid, tuple) and len(pid) == 2 and pid[0] == _RESULT_REF):
            raise pickle.UnpicklingError(f"unknown reference {pid!r}")
        data = self.refs.get(pid[1])
        if data is None:
            raise RemoteError(f"the call takes the result of task {pid[1]}, which is not in "
                              "the database (forgotten, or not a call that Succeeded)")  # fmt: skip
        return pickle.loads(data)


def _dumps(
    obj: Any, by_value: bool, what: str, persistent_id: Callable[[Any], Any] | None = None
) -> bytes:
    if not by_value:
        try:
            out = io.BytesIO()
            pickler = pickle.Pickler(out, _PROTOCOL)
            if persistent_id is not None:
                pickler.persistent_id = persistent_id  # type: ignore[method-assign]
            pickler.dump(obj)
            return out.getvalue()
        except (pickle.PicklingError, AttributeError, TypeError):
            pass  # a lambda, a closure, a local class: by value, then
    try:
        import cloudpickle  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise InvalidInput(
            f"{what} cannot be pickled by reference (a function of the running script, a "
            "lambda or a closure): install cloudpickle (pip install 'qdo-queue[cloud]'), "
            "or define the function in a module that the agents can import"
        ) from None
    try:
        out = io.BytesIO()
        pickler = cloudpickle.CloudPickler(out, protocol=_PROTOCOL)
        if persistent_id is not None:
            pickler.persistent_id = persistent_id
        pickler.dump(obj)
        return out.getvalue()
    except InvalidInput:  # (said by persistent_id: what it cannot take)
        raise
    except Exception as e:
        raise InvalidInput(f"{what} cannot be pickled: {error_text(e)}") from e

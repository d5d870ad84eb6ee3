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
from collections.abc import Callable
from typing import Any

from .errors import InvalidInput, QdoError, RemoteTraceback

__all__ = ["MAX_RESULT_BYTES", "RemoteError", "ResultTooLarge", "call_key", "decode_result",
           "describe", "encode_call", "encode_error", "encode_result", "run_call"]  # fmt: skip

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


def encode_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """The pickle of a call: by reference where possible, else with cloudpickle."""
    return _dumps((fn, args, kwargs), by_value=getattr(fn, "__module__", None) == "__main__",
                  what=f"the call of {describe_fn(fn)}")  # fmt: skip


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


def run_call(call: bytes) -> Any:
    """Run a pickled call (in a function worker process of an agent)."""
    try:
        fn, args, kwargs = pickle.loads(call)
    except Exception as e:
        raise RemoteError(f"cannot unpickle the call ({type(e).__name__}: {e}): the agents "
                          "need the code it was made with (and cloudpickle, for a function "
                          "of the driver's script)") from e  # fmt: skip
    return fn(*args, **kwargs)


def encode_result(value: Any, limit: int = MAX_RESULT_BYTES) -> bytes:
    data = _dumps(value, by_value=False, what="the result")
    if len(data) > limit:
        raise ResultTooLarge(
            f"the result is {len(data):,} bytes pickled, more than the {limit:,} that the "
            "database keeps: write large data to a file and return its name"
        )
    return data


def encode_error(error: BaseException, trace: str) -> bytes:
    """The pickle of an exception a call raised, with the worker's traceback."""
    try:
        return _dumps((error, trace), by_value=False, what="the exception")
    except QdoError:
        return pickle.dumps((RemoteError(f"{type(error).__name__}: {error}"), trace), _PROTOCOL)


def decode_result(ok: bool, data: bytes) -> Any:
    """A call's result as stored: the value if ``ok``, else the exception to raise (its
    ``__cause__`` the remote traceback)."""
    try:
        loaded = pickle.loads(data)
    except Exception as e:
        return RemoteError(f"cannot unpickle the call's {'result' if ok else 'exception'} "
                           f"here ({type(e).__name__}: {e})")  # fmt: skip
    if ok:
        return loaded
    error, trace = loaded
    error.__cause__ = RemoteTraceback(trace)
    return error


def _dumps(obj: Any, by_value: bool, what: str) -> bytes:
    if not by_value:
        try:
            return pickle.dumps(obj, _PROTOCOL)
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
        cloudpickle.CloudPickler(out, protocol=_PROTOCOL).dump(obj)
        return out.getvalue()
    except Exception as e:
        raise InvalidInput(f"{what} cannot be pickled: {type(e).__name__}: {e}") from e

"""How calls travel (qdo.calls): by reference or by value, results and errors, keys."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qdo import calls
from qdo.calls import (
    MAX_RESULT_BYTES,
    Refs,
    RemoteError,
    ResultTooLarge,
    call_key,
    decode_result,
    describe,
    encode_call,
    encode_error,
    encode_result,
    result_ref,
    run_call,
)
from qdo.errors import InvalidInput, RemoteTraceback
from tests import calls_helpers as h

ROOT = Path(__file__).resolve().parents[2]


def test_an_importable_function_goes_by_reference() -> None:
    data, _ = encode_call(h.square, (7,), {})
    assert b"calls_helpers" in data and b"square" in data
    assert pickle.loads(data) == (h.square, (7,), {})
    assert run_call(data) == 49


def test_a_lambda_and_a_closure_go_by_value() -> None:
    k = 3
    data, _ = encode_call(lambda x: x * k, (5,), {})
    assert run_call(data) == 15


def test_the_key_is_the_same_in_another_process() -> None:
    here = call_key(encode_call(h.slow_square, (4,), {"seconds": 0.5})[0])
    code = ("from qdo.calls import call_key, encode_call\n"
            "from tests import calls_helpers as h\n"
            "print(call_key(encode_call(h.slow_square, (4,), {'seconds': 0.5})[0]))")  # fmt: skip
    there = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.strip()  # fmt: skip
    assert here == there and len(here) == 32
    assert here != call_key(encode_call(h.slow_square, (4,), {"seconds": 0.6})[0])


def test_description_is_short_whatever_the_arguments() -> None:
    text = describe(h.square, (list(range(10_000)), "x" * 10_000), {"k": {"a": 1}})
    assert text.startswith("tests.calls_helpers.square([0, 1, 2, 3, ...], 'xxx")
    assert len(text) < 200 and "k={'a': 1}" in text


def test_results_errors_and_their_limits() -> None:
    assert decode_result(True, encode_result({"a": [1, 2]})) == (True, {"a": [1, 2]})
    size = len(encode_result(b"x" * 1000))
    assert encode_result(b"x" * 1000, limit=size)  # the limit itself is fine
    with pytest.raises(ResultTooLarge, match=f"{size:,} bytes pickled, more than the {size - 1:,}"):
        encode_result(b"x" * 1000, limit=size - 1)
    try:
        h.fail("why")
    except ValueError as e:
        ok, error = decode_result(False, encode_error(e, "Traceback ...\nValueError: why\n"))
    assert not ok and isinstance(error, ValueError) and str(error) == "why"
    assert isinstance(error.__cause__, RemoteTraceback) and "ValueError: why" in str(
        error.__cause__
    )
    odd = h.Unpicklable()
    assert decode_result(False, encode_error(odd, "tb"))[1].args == ("Unpicklable: cannot travel",)
    # an exception that does not rebuild here still says what it was, and where
    try:
        h.raise_two_args()
    except h.TwoArgs as e:
        ok, error = decode_result(False, encode_error(e, "Traceback ...\nTwoArgs: needs two\n"))
    assert not ok and isinstance(error, RemoteError)
    assert str(error).startswith("TwoArgs: needs two (it cannot be rebuilt here: TypeError")
    assert isinstance(error.__cause__, RemoteTraceback) and "needs two" in str(error.__cause__)
    # what an earlier qdo stored (the exception and its trace, in one pickle) still reads
    ok, error = decode_result(False, pickle.dumps((ValueError("old"), "tb")))
    assert not ok and str(error) == "old" and error.__cause__.text == "tb"
    # a generator's item that does not pickle is named
    with pytest.raises(InvalidInput, match="item 1 of the generator cannot be pickled"):
        calls.run_items(h.yields_a_lock(), lambda i, data: None)
    # a result that does not unpickle here is an error, not a value (True: it was one)
    ok, error = decode_result(True, b"not a pickle")
    assert not ok and isinstance(error, RemoteError) and "the call's result" in str(error)
    ok, error = decode_result(True, b"not a pickle", "item 3")
    assert not ok and "cannot unpickle the call's item 3 here" in str(error)


def test_what_cannot_be_pickled_is_one_clear_error() -> None:
    with pytest.raises(Exception, match="cannot be pickled"):
        encode_call(h.square, (threading.Lock(),), {})
    assert decode_result(True, b"not a pickle")[0] is False
    # a call no bigger than a result may be (a 70 MiB argument was stored)
    encode_call(h.square, (b"x" * (MAX_RESULT_BYTES - 1000),), {})
    with pytest.raises(InvalidInput, match="bytes pickled, more than the"):
        encode_call(h.square, (b"x" * MAX_RESULT_BYTES,), {})


def test_an_agent_reads_each_referenced_result_once_and_keeps_what_fits() -> None:
    asked: list[list[int]] = []

    def fetch(ids: list[int]) -> dict[int, bytes]:
        asked.append(ids)
        return {i: bytes(10) for i in ids if i != 99}  # 99: not in the database

    refs = Refs(fetch, limit=30)
    assert set(refs.get([1, 2, 99])) == {1, 2}
    assert set(refs.get([2, 1])) == {1, 2} and asked == [[1, 2, 99]]  # kept: no fetch
    refs.get([3, 4])  # over the limit: the least recently used (1, 2) go first
    assert asked[-1] == [3, 4] and refs.size <= 30 and 4 in refs.kept
    refs.get([1])
    assert asked[-1] == [1]


def test_a_call_takes_referenced_results_in_place_of_their_references() -> None:
    marker = object()
    data, found = encode_call(h.square, (marker,), {},
                              refer=lambda o: result_ref(5) if o is marker else None)  # fmt: skip
    assert found == [marker] and len(data) < 100
    assert run_call((data, {5: pickle.dumps(9)})) == 81
    with pytest.raises(RemoteError, match="result of task 5"):
        run_call((data, {}))


def test_a_generators_items_go_one_by_one_and_join_into_its_result() -> None:
    sent: list[tuple[int, bytes]] = []
    end = calls.run_items(iter(["a", "b", "c"]), lambda i, data: sent.append((i, data)))
    assert end == calls.Yielded(3) and [i for i, _ in sent] == [0, 1, 2]
    final = calls.encode_result(end)
    assert pickle.loads(calls.whole_result(final, sent)) == ["a", "b", "c"]
    assert pickle.loads(calls.whole_result(calls.encode_result(calls.Yielded(0)), [])) == []
    plain = calls.encode_result(["Yielded"])  # not a generator's: as it is
    assert calls.whole_result(plain, []) is plain


def test_an_items_value_travels_inside_the_call() -> None:
    marker = object()
    data, found = calls.encode_call(
        h.square, (marker,), {}, lambda o: calls.value_ref(7) if o is marker else None
    )
    assert found == [marker] and calls.run_call(data) == 49

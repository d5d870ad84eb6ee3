"""What the command groups share: the parser's make, argument types, the status print."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from ..models import INT32_MAX, INT32_MIN, INT64_MAX, MAX_SECONDS, State

STATE_NAMES = [s.value for s in State]

#: What a command runs: the parsed arguments in, the exit code out.
Run = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """Takes every ``--multi-word`` option spelled ``--multi_word`` too, as the original
    QDO spelled them (``--cores_per_worker``, ``--keep_env``); help shows one spelling."""

    def add_argument(self, *names: Any, **kw: Any) -> argparse.Action:
        action = super().add_argument(*names, **kw)
        for name in names:
            if isinstance(name, str) and name.startswith("--") and "-" in name[2:]:
                alias = "--" + name[2:].replace("-", "_")
                if alias not in self._option_string_actions:
                    # registered for parsing only: argparse's help lists option_strings
                    self._option_string_actions[alias] = action
        return action

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # argparse of Python 3.11 and 3.12 takes the value "--" of an option (--lease=--)
        # for the end of the options, and leaves the option an empty list (qdo do then
        # crashed; retry --id=-- retried nothing): the value is what was written, for the
        # option's type to judge
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)


class Commands:
    """The subcommands of a parser, made in the order of ``listing`` (name: one-line
    help), which is the order help and usage errors show them in; each command group's
    ``register`` then claims its own and adds their arguments.

    With ``only``, the parser has that one command: the others' arguments go to an
    ``_Unbuilt`` parser that keeps nothing.  A command run from the shell needs no
    other's arguments, and making all of them (some 180 ``add_argument`` calls) costs
    more than some commands take to run."""

    def __init__(
        self,
        parser: argparse.ArgumentParser,
        listing: Mapping[str, str],
        only: str | None = None,
    ) -> None:
        sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
        self._parsers: dict[str, argparse.ArgumentParser] = {
            name: sub.add_parser(name, help=help, description=help)
            if only is None or name == only
            else _Unbuilt()
            for name, help in listing.items()
        }
        self._unclaimed = set(listing)

    def parser(self, name: str) -> argparse.ArgumentParser:
        """The bare parser of ``name``: for a command that is a group of verbs."""
        if name not in self._unclaimed:
            raise RuntimeError(f"command {name} is not listed, or registered twice")
        self._unclaimed.remove(name)
        return self._parsers[name]

    def command(self, name: str, run: Run) -> argparse.ArgumentParser:
        """``name`` runs ``run``; add its arguments to the parser returned."""
        p = self.parser(name)
        p.set_defaults(func=run)
        # after the command too, as the original QDO took it (qdo launch -v Q 1 ...)
        p.add_argument("-v", "--verbose", action="store_true",
                       help="more detail; on errors, the whole cause chain")  # fmt: skip
        return p

    def queue_command(self, name: str, run: Run) -> argparse.ArgumentParser:
        """A command whose first argument is a queue's name."""
        p = self.command(name, run)
        p.add_argument("queue", metavar="QUEUE")
        return p

    def check(self) -> None:
        """Fail if a listed command was left without a group to run it."""
        if self._unclaimed:
            raise RuntimeError(f"no command group registers {', '.join(sorted(self._unclaimed))}")


class _Unbuilt(argparse.ArgumentParser):
    """The parser of a command that is not run: whatever is added to it is dropped."""

    def __init__(self) -> None:  # (none of ArgumentParser's state: nothing reads it)
        pass

    def add_argument(self, *names: Any, **kw: Any) -> Any:
        return None

    def add_mutually_exclusive_group(self, **kw: Any) -> Any:
        return self

    def add_subparsers(self, **kw: Any) -> Any:
        return self

    def add_parser(self, name: str, **kw: Any) -> Any:  # (as a subparsers action)
        return self

    def set_defaults(self, **kw: Any) -> None:
        pass


# -- argument types -------------------------------------------------------------------------
def count(text: str) -> int:
    return _whole(text, 0)


def positive_int(text: str) -> int:
    return _whole(text, 1)


def _whole(text: str, low: int) -> int:
    """A whole number from ``low`` to what a 64-bit column holds."""
    try:
        n = int(text)
    except ValueError:
        n = low - 1
    if n < low:  # (-1 for --workers said "from 0", and 0 then "at least 1")
        raise argparse.ArgumentTypeError(f"expected a number of at least {low}, got {text!r}")
    if n > INT64_MAX:
        raise argparse.ArgumentTypeError(
            f"expected a number from {low} to {INT64_MAX} (2**63 - 1), got {text!r}"
        )
    return n


def exit_code(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = INT32_MAX + 1
    if not INT32_MIN <= n <= INT32_MAX:
        raise argparse.ArgumentTypeError(f"expected an exit code (a 32-bit integer), got {text!r}")
    return n


def port(text: str) -> int:
    try:  # (its own message for any bad value: "abc" said "a number of at least 0")
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 65_535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return n


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"expected seconds (a number from 0 to {MAX_SECONDS:.0f}, a year), got {text!r}"
        )
    return value


def some_seconds(least: float) -> Any:
    """An argparse type: seconds, more than 0 and at least ``least``."""

    def parse(text: str) -> float:
        value = seconds(text)
        if not value > 0 or value < least:
            raise argparse.ArgumentTypeError(
                f"expected seconds, more than 0{f' and at least {least:g}' if least else ''}, "
                f"got {text!r}"
            )
        return value

    return parse


#: The most task ids one ``--id`` list names.
MAX_IDS = 1_000_000


def id_list(text: str) -> list[int]:
    """An argparse type: task ids such as ``5,7-9`` (5, 7, 8 and 9), in order, once each."""
    ids: dict[int, None] = {}
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            a = int(low)
            b = int(high) if dash else a
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected task ids such as 5,7-9, got {text!r}") from None  # fmt: skip
        if a < 1 or b < a or b > INT64_MAX:
            raise argparse.ArgumentTypeError(f"expected task ids such as 5,7-9 (from low to "
                                             f"high, 1 or more), got {part.strip()!r}")  # fmt: skip
        if len(ids) + b - a + 1 > MAX_IDS:
            raise argparse.ArgumentTypeError(f"at most {MAX_IDS:,} task ids at once")
        ids.update(dict.fromkeys(range(a, b + 1)))
    return list(ids)


# -- output ---------------------------------------------------------------------------------
def print_status(status: dict[str, Any], as_json: bool, out: TextIO) -> None:
    """A queue's state and task counts (``qdo status``, and after ``qdo do``)."""
    if as_json:
        print(json.dumps(status, indent=2), file=out)
        return
    counts = status["ntasks"]
    total = sum(counts.values())
    done = counts["Succeeded"] + counts["Failed"] + counts["Killed"]
    percent = f"{100 * done / total:.1f}% done" if total else "empty"
    print(f"{status['name']}  {status['state']}  {total:,} tasks, {percent}", file=out)
    width = max(len(f"{total:,}"), 1)
    claimed = status.get("claimed", 0)
    for state in STATE_NAMES:
        note = ""
        n = counts[state]
        if state == "Waiting" and status["blocked"]:
            note = f"   ({status['blocked']:,} blocked by a failed or missing requirement)"
        if state == "Running" and claimed:  # only those that started: the others apart
            n -= claimed
            note = f"   (and {claimed:,} claimed ahead by agents, not started)"
        print(f"  {state:<10} {n:>{width},}{note}", file=out)

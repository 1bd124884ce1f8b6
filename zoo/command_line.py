"""How ``python -m zoo.main`` reports errors: one or two plain lines on stderr and a status.

- Status 2 (:data:`USAGE_ERROR`): the command line or the config is wrong: a
  missing config file, an unknown variant or override key, a value of the wrong
  type, or a :class:`ConfigError` (a check that failed before training).
- Status 1 (:data:`RUN_ERROR`): an error during training (a NaN/Inf stop, a
  checkpoint error, a bug).
- ``--traceback`` prints the full traceback instead of the message.
"""

from __future__ import annotations

import re
import sys
import traceback
from typing import NoReturn

from absl import flags

USAGE_ERROR, RUN_ERROR = 2, 1
TRACEBACK_HINT = "(--traceback shows the full traceback)"
LIST_HINT = "(python -m zoo.main --list shows every config and its variants)"


class ConfigError(ValueError):
    """A config refused before training started (exit status 2)."""


def fail(
    message: str, err: BaseException, status: int, *, show_traceback: bool, hint=""
) -> NoReturn:
    """Print ``error: message`` (and ``hint``), or ``err``'s traceback; exit with ``status``."""
    if show_traceback:
        traceback.print_exception(err)
    else:
        print(f"error: {message}" + (f"\n{hint}" if hint else ""), file=sys.stderr)
    sys.exit(status)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (``app.run(..., flags_parser=parse_flags)``) with plain errors.

    The config file named by ``--config`` is checked first (it exists, and its
    ``VARIANTS`` hold the variant asked for), then absl and ml_collections parse.
    """
    from zoo.config_files import check_config_spec

    show_traceback = "--traceback" in argv
    spec = config_spec(argv)
    try:
        if spec is not None:
            check_config_spec(spec)
    except ValueError as err:
        fail(str(err), err, USAGE_ERROR, show_traceback=show_traceback, hint=LIST_HINT)
    try:
        return flags.FLAGS(argv)
    except Exception as err:  # noqa: BLE001 - any failure here is the command line's
        message, hint = flag_error_message(err, argv)
        fail(message, err, USAGE_ERROR, show_traceback=show_traceback, hint=hint)


def config_spec(argv: list[str]) -> str | None:
    """The ``path[:variant]`` of ``--config=...`` or ``--config ...`` in ``argv``."""
    for i, arg in enumerate(argv):
        if m := re.fullmatch(r"--?config(=(.*))?", arg):
            return m.group(2) if m.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
    return None


def flag_error_message(err: BaseException, argv: list[str]) -> tuple[str, str]:
    """``(message, hint)`` for an error raised while parsing ``argv``."""
    chain, e = [], err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    if any("Error whilst parsing config file" in str(e) for e in chain):
        return f"{config_spec(argv)}: {chain[-1]}", LIST_HINT  # get_config's own error
    if isinstance(err, ImportError):  # the config file's imports
        return f"{config_spec(argv)}: {err}", ""
    if isinstance(err, AttributeError | KeyError):  # ConfigDict: an unknown override key
        text = str(err).replace("\\'", "'").replace("\\n", " ")
        m = re.search(r"'(\w+)'", text)
        key = m.group(1) if m else text
        flags_named = [
            a.split("=")[0] for a in argv if re.match(rf"--?config\.(.*\.)?{re.escape(key)}\b", a)
        ]
        flag = flags_named[0] if flags_named else "--config"
        guess = re.search(r'Did you mean "(\w+)"', text)
        return f"{flag}: the config has no key {key!r}" + (
            f"; did you mean {guess.group(1)!r}?" if guess else ""
        ), ""
    if m := re.match(r"flag --([\w.]+)=(.*?): (.*)", str(err), re.S):
        name, value, why = m.groups()
        kind = flags.FLAGS[name].parser.flag_type() if name in flags.FLAGS else ""
        if kind in ("int", "float", "bool"):
            return f"--{name}={value}: expected {'an' if kind == 'int' else 'a'} {kind}", ""
        return f"--{name}={value}: {why}", ""
    return str(err), ""

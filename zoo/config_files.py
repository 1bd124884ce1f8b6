"""The experiment config files in ``configs/``: what each is and which variants it takes.

A config file declares both in one place each, at module level:

- its docstring, whose first line says what it trains (``--list`` prints it);
- ``VARIANTS = {"tiny": "one line: what the variant is", ...}``: the arguments
  its ``get_config(arg)`` accepts (``configs/ddpm_digits.py:tiny``).
  ``get_config(None)`` is the default the docstring describes; any other
  argument raises ValueError naming ``VARIANTS``.

They are read with ``ast``, without importing the file: listing is instant and
a config whose imports fail still lists.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import NamedTuple

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class ConfigFile(NamedTuple):
    path: str  # as the command line names it: configs/ddpm_digits.py
    description: str  # the docstring's first line
    variants: dict[str, str]  # VARIANTS: name -> one-line description


def read_config_file(path: str | os.PathLike) -> ConfigFile:
    """The description and VARIANTS of one config file (ValueError if it cannot be parsed)."""
    try:
        tree = ast.parse(Path(path).read_text(), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as e:
        raise ValueError(f"config file {str(path)!r} cannot be read: {e}") from None
    doc = (ast.get_docstring(tree) or "").strip()
    variants: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "VARIANTS" for t in node.targets
        ):
            try:
                variants = dict(ast.literal_eval(node.value))
            except (ValueError, TypeError):
                raise ValueError(
                    f"{path}: VARIANTS must be a literal dict {{name: description}}"
                ) from None
    return ConfigFile(_display(path), doc.splitlines()[0] if doc else "", variants)


def config_module(name: str, directory: str | os.PathLike = CONFIG_DIR):
    """The config file ``<directory>/<name>.py`` imported as a module, for a config that
    builds on another (``config_module("glide_shapes").get_config(arg)``) wherever the
    command runs from (``configs/`` is not an installed package)."""
    import importlib.util

    path = Path(directory) / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"no config file {str(path)!r}")
    spec = importlib.util.spec_from_file_location(f"zoo_configs.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_files(directory: str | os.PathLike = CONFIG_DIR) -> list[ConfigFile]:
    """Every ``*.py`` config in ``directory`` (but ``__init__.py``), sorted by name."""
    paths = sorted(p for p in Path(directory).glob("*.py") if not p.name.startswith("_"))
    return [read_config_file(p) for p in paths]


def listing(files: list[ConfigFile]) -> str:
    """One line per config (path, description), then one per variant (``  :name``)."""
    rows = []
    for f in files:
        rows.append((f.path, f.description))
        rows += [(f"  :{name}", text) for name, text in f.variants.items()]
    width = max((len(name) for name, _ in rows), default=0) + 2
    return "\n".join(f"{name:<{width}}{text}".rstrip() for name, text in rows)


def check_config_spec(spec: str) -> None:
    """ValueError for ``path[:variant]`` naming a missing file or a variant it does not declare.

    A file without ``VARIANTS`` is not checked here (its ``get_config`` decides).
    """
    path, _, variant = spec.partition(":")
    if not os.path.isfile(path):
        raise ValueError(f"no config file {path!r}")
    declared = read_config_file(path).variants
    if variant and declared and variant not in declared:
        raise ValueError(f"{path} has no variant {variant!r}; its variants: {', '.join(declared)}")


def _display(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies below it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

"""Importing deployed code under private module names.

A deployment (one file or a folder) is imported as a package named after its digest,
``shoal_user_<hash>``: a deployed ``storage.py`` becomes ``shoal_user_<hash>.storage`` and
never replaces Shoal's ``storage``, ``runtime`` or ``controller`` in ``sys.modules``. Its
modules import each other relatively (``from . import helpers``). The deploying machine
imports the code the same way, from the same files, so what deploys is what workers load.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.define.decorator import Definition, definition_of
from runtime.errors import DeployError

if TYPE_CHECKING:
    from collections.abc import Collection
    from types import ModuleType

    from runtime.bundles.bundle import Bundle

PREFIX = "shoal_user_"


def package_name(sha: str) -> str:
    """The private package a deployment's modules live in."""
    return f"{PREFIX}{sha[:16]}"


def materialize(code_dir: Path, bundle: Bundle, sha: str) -> Path:
    """Write a bundle to a content-addressed folder, whole or not at all."""
    folder = code_dir / sha
    if folder.is_dir():
        return folder
    code_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=code_dir, prefix=f".{sha[:16]}-"))
    try:
        bundle.write(tmp)
        tmp.rename(folder)  # atomic: a concurrent worker never imports half a bundle
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not folder.is_dir():  # not another worker's rename that won the race
            raise
    return folder


def import_module(
    root: Path, sha: str, module: str, *, label: str = "", nearby: Collection[str] = ()
) -> ModuleType:
    """Import ``module`` (a dotted name inside the bundle at ``root``) under its private name.

    Failures become a :class:`DeployError` naming the file. ``nearby``: top-level module
    names that sit beside a deployed file but were not deployed with it (for the hint).
    """
    package = package_name(sha)
    where = label or module or package
    try:
        if package not in sys.modules:
            _create_package(package, root, where)
        return importlib.import_module(f"{package}.{module}" if module else package)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        ours = {m.split(".")[0] for m in _top_level(root)}
        if missing in ours:
            hint = (
                f": {missing} is part of this deployment, and its modules import each other "
                f"relatively: write 'from . import {missing}'"
            )
        elif missing in nearby:
            hint = (
                f": {missing} sits beside the deployed file but a file deploys alone; deploy "
                f"the folder (shoal deploy DIR) and write 'from . import {missing}'"
            )
        else:
            hint = " (is it installed where workers run?)"
        raise DeployError(f"importing {where} failed: No module named {e.name!r}{hint}") from e
    except SyntaxError as e:
        file = Path(e.filename or where)
        if file.is_relative_to(root):
            file = file.relative_to(root)  # the file as the bundle names it
        raise DeployError(
            f"importing {where} failed: SyntaxError in {file}, line {e.lineno}: {e.msg}"
        ) from e
    except SystemExit as e:  # a script's exit must not end the deploying process
        raise DeployError(f"importing {where} failed: it called sys.exit({e.code!r})") from e
    except Exception as e:
        raise DeployError(f"importing {where} failed: {type(e).__name__}: {e}") from e


def _create_package(package: str, root: Path, where: str) -> None:
    init = root / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(
            package, init, submodule_search_locations=[str(root)]
        )
    else:  # a plain folder of modules: an empty package whose path is the folder
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(root)]
    if spec is None:
        raise DeployError(f"cannot import {where}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    if spec.loader is not None:
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(package, None)
            raise


def _top_level(root: Path) -> list[str]:
    return [p.stem for p in root.iterdir() if p.suffix == ".py" or any(p.glob("*.py"))]


def unload(sha: str) -> None:
    """Forget a deployment's modules (after a deploy has read its definitions)."""
    package = package_name(sha)
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]


def definitions(module: ModuleType) -> list[Definition]:
    """The functions a module defines with ``@function`` (not ones it imports)."""
    found = []
    for attr, obj in vars(module).items():
        d = definition_of(obj)
        if d is not None and getattr(obj, "__module__", None) == module.__name__:
            if attr != obj.__name__ or "<locals>" in obj.__qualname__:
                raise DeployError(
                    f"{obj.__qualname__} must be defined at module level under its own name "
                    "so workers can find it"
                )
            found.append(d)
    return found

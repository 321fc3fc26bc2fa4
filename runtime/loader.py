"""Importing function modules: from a file at deploy time, from deployed source in a worker."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .decorator import Definition, definition_of
from .errors import DeployError


def import_file(path: Path, module_name: str | None = None) -> ModuleType:
    """Import a Python file as a module (its directory goes on sys.path for sibling imports)."""
    path = path.resolve()
    name = module_name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DeployError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    parent = str(path.parent)
    if parent not in sys.path:
        sys.path.append(parent)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise DeployError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    return module


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
    names = [d.spec.name for d in found]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise DeployError(f"{module.__name__} defines function name(s) twice: {sorted(dupes)}")
    return found


def code_sha(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


def materialize(code_dir: Path, module: str, sha: str, source: bytes) -> Path:
    """Write deployed source to a content-addressed folder, so versions never collide."""
    folder = code_dir / sha[:16]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}.py"
    if not path.exists() or code_sha(path.read_bytes()) != sha:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(source)
        tmp.replace(path)  # atomic, so a concurrent worker never imports half a file
    return path

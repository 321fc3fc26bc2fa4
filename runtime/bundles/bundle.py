"""Bundles: the code of a deployment, one file or a folder, as a deterministic archive.

A bundle maps relative POSIX paths to file contents. A single file deploys as a bundle of
that one file; a folder deploys every regular file under it, recursively, except hidden
names (``.git``, ``.env``...), ``__pycache__`` folders and compiled ``*.pyc``/``*.pyo``
files. Its digest covers the paths and contents only (not timestamps, permissions or how
the archive is compressed), so deploying the same code again gives the same version.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runtime.errors import DeployError

MAX_BUNDLE = 64 * 1024 * 1024  # bytes of files, before compression: weights go in storage/
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
_SKIPPED_DIRS = {"__pycache__"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Bundle:
    files: dict[str, bytes]  # relative POSIX path -> content

    @property
    def digest(self) -> str:
        """SHA-256 over the sorted paths and contents: the code's identity."""
        h = hashlib.sha256()
        for name in sorted(self.files):
            data = self.files[name]
            h.update(name.encode() + b"\0" + len(data).to_bytes(8, "big"))
            h.update(data)
        return h.hexdigest()

    @property
    def size(self) -> int:
        return sum(len(d) for d in self.files.values())

    def modules(self) -> dict[str, str]:
        """The bundle's importable modules: dotted name -> file (``pkg.sub`` ->
        ``pkg/sub.py``, ``pkg`` -> ``pkg/__init__.py``, ``""`` -> the root ``__init__.py``)."""
        out = {}
        for name in sorted(self.files):
            path = PurePosixPath(name)
            if path.suffix != ".py":
                continue
            parts = [*path.parent.parts, path.stem]
            if parts[-1] == "__init__":
                parts.pop()
            if all(p.isidentifier() for p in parts):
                out[".".join(parts)] = name
        return out

    def to_zip(self) -> bytes:
        """A zip with sorted entries, a fixed time and fixed permissions."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for name in sorted(self.files):
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # Unix, whatever machine deploys
                info.external_attr = 0o644 << 16
                z.writestr(info, self.files[name])
        return buf.getvalue()

    @classmethod
    def from_zip(cls, blob: bytes) -> Bundle:
        try:
            with zipfile.ZipFile(io.BytesIO(blob)) as z:
                files = {}
                for info in z.infolist():
                    if not info.is_dir():
                        files[_checked(info.filename)] = z.read(info)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise DeployError(f"deployed code is not a valid bundle: {e}") from None
        return cls(files)

    @classmethod
    def load(cls, blob: bytes, sha: str, module: str) -> Bundle:
        """Deployed code, checked against the digest its spec names. Code deployed before
        bundles existed is one module's source, hashed as it is."""
        if not zipfile.is_zipfile(io.BytesIO(blob)):
            bundle, digest = cls({f"{module}.py": blob}), hashlib.sha256(blob).hexdigest()
        else:
            bundle = cls.from_zip(blob)
            digest = bundle.digest
        if digest != sha:
            raise DeployError(f"deployed code {sha[:12]} does not match its digest ({digest[:12]})")
        return bundle

    @classmethod
    def from_path(cls, path: Path) -> Bundle:
        """A bundle of one ``.py`` file, or of a folder's files."""
        path = Path(path)
        if path.is_dir():
            bundle = cls(_collect(path))
            if not bundle.modules():
                raise DeployError(f"{path} holds no Python module to deploy")
        elif path.is_file() and path.suffix == ".py":
            if not path.stem.isidentifier():
                fixed = re.sub(r"\W", "_", path.stem)
                raise DeployError(
                    f"{path.name} cannot be imported as a module: rename it (e.g. {fixed}.py)"
                )
            bundle = cls({path.name: path.read_bytes()})
        elif not path.exists():
            raise DeployError(f"{path}: no such file or folder")
        else:
            raise DeployError(f"{path} is neither a Python file nor a folder")
        if bundle.size > MAX_BUNDLE:
            raise DeployError(
                f"{path} holds {bundle.size} bytes of files; a bundle is limited to "
                f"{MAX_BUNDLE}: keep model weights and data sets in storage/ and load them "
                "in setup()"
            )
        return bundle

    def write(self, folder: Path) -> None:
        for name, data in self.files.items():
            target = folder / _checked(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def _collect(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for folder, dirs, names in os.walk(root):  # symlinked folders are not followed
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS)
        for n in names:
            path = Path(folder) / n
            if n.startswith(".") or n.endswith(_SKIPPED_SUFFIXES) or not path.is_file():
                continue
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def _checked(name: str) -> str:
    """A bundle path must stay inside the bundle: relative, no ``..``."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name:
        raise DeployError(f"bundle entry {name!r} would land outside the bundle")
    return path.as_posix()

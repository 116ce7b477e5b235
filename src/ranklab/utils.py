"""Small shared helpers: atomic writes, hashing, provenance."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a temporary sibling of ``path``, then rename it onto ``path``:
    readers see the old file or the new one, never half of it; a failed write leaves no file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # mkstemp creates 0600; results are for colleagues too: the mode open() would give
        os.chmod(tmp, 0o666 & ~current_umask())
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON (NaN and infinities written as null, which every parser reads), atomically."""
    text = json.dumps(finite(obj), indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    atomic_write_text(path, text + "\n")


def finite(obj: Any) -> Any:
    """``obj`` with every float that is NaN or infinite replaced by None (recursively)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        return finite(obj.item())
    return obj


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to ``final`` only if the block succeeds.

    An interrupted block (exception, Ctrl-C, kill) leaves no directory at ``final``, so a later
    run never trusts a half-written result. Stale temporaries are removed on the next call.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():  # another process finished the same content first
            shutil.rmtree(tmp)
        else:
            try:
                os.replace(tmp, final)
            except OSError:
                if not final.exists():
                    raise
                shutil.rmtree(tmp)  # another process renamed its copy in between
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def hash_files(paths: list[Path], chunk: int = 1 << 22) -> str:
    """Content hash (blake2b) of files, in the given order, names included; a folder stands
    for its files in name order (shards)."""
    h = hashlib.blake2b(digest_size=16)
    files = []
    for p in map(Path, paths):
        files.extend(sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])
    for p in files:
        h.update(Path(p).name.encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()


def hash_object(obj: Any) -> str:
    """Stable hash of a JSON-serialisable object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The current commit (with ``-dirty`` when the tree has changes), or None outside git.
    Without ``cwd``: ranklab's own, as it was at this process's first call. The code a process
    runs is what it imported when it started, so a study's later runs must not record a commit
    made while it ran (they did)."""
    if cwd is None:
        return _own_commit()
    return _commit_of(cwd)


@functools.cache
def _own_commit() -> str | None:
    return _commit_of(Path(__file__).resolve().parent)


def _commit_of(cwd: str | os.PathLike) -> str | None:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a/b': 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def parse_bytes(value: int | str | None, key: str) -> int | None:
    """A size in bytes from an int or a string such as "512MB", "4GB", "1.5GiB" (decimal
    units are powers of 1000, ``i`` units of 1024); None stays None."""
    if value is None or isinstance(value, int):
        if isinstance(value, int) and value < 1:
            from ranklab.errors import ConfigError

            raise ConfigError(key, f"must be a positive size, got {value}")
        return value
    import re

    units = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
    units |= {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?)?b?\s*", str(value).lower())
    if not m or float(m.group(1)) <= 0:
        from ranklab.errors import ConfigError

        raise ConfigError(key, f"is not a size like 512MB or 4GB: {value!r}")
    return int(float(m.group(1)) * units[m.group(2) or ""])


def writable_dir(path: str | os.PathLike, key: str) -> None:
    """Create ``path`` (and its parents) if needed and check that a file can be made in it;
    else a ConfigError naming ``key`` (one line, exit status 2) rather than an OSError
    traceback after the work was done."""
    from ranklab.errors import ConfigError

    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".ranklab-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(key, f"cannot write in {path}: {e.strerror or e}") from None


def creatable_dir(path: str | os.PathLike, key: str) -> None:
    """Check, creating nothing, that ``path`` could be made: its nearest existing ancestor is a
    folder this process may write in; else a ConfigError naming ``key``. For folders whose
    name is not final yet (a run folder's timestamp): the check holds for any last part."""
    from ranklab.errors import ConfigError

    target = Path(path).absolute()
    for folder in (target, *target.parents):
        if not folder.exists():
            continue
        if not folder.is_dir():
            raise ConfigError(key, f"cannot make {path}: {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(key, f"cannot make {path}: {folder} is not writable")
        return

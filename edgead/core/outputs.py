"""Writing without losing anything the user has.

Every output edgead writes goes through here: an existing path is refused unless ``--overwrite``
was given, writability is checked before long work starts, files are written under a temporary
name and renamed into place (an interrupted write never leaves half a file), and replacing a
folder replaces exactly that folder. New files and folders get the usual permissions under the
process umask (``tempfile`` would make them private to the user).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _existing_ancestor(p: Path) -> Path:
    p = p.absolute()
    while not p.exists():
        p = p.parent
    return p


def check_writable(path: str | Path, what: str) -> None:
    """The nearest existing folder above ``path`` must be writable (checked before long work)."""
    anchor = _existing_ancestor(Path(path).parent)
    if not anchor.is_dir():
        raise ConfigError(f"cannot write {what} {path}: {anchor} is a file, not a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {what} {path}: no permission to write in {anchor}")


def check_new_file(path: str | Path | None, overwrite: bool, what: str) -> Path | None:
    """An output file that must not exist yet (or may be replaced with ``overwrite``)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {p} is a folder; give a file name")
    if p.exists() and not overwrite:
        raise ConfigError(f"{what} {p} already exists; pass --overwrite to replace it (nothing was changed)")
    check_writable(p, what)
    return p


def check_new_dir(path: str | Path | None, overwrite: bool, what: str) -> Path | None:
    """An output folder that must not exist or be empty (or may be written into with ``overwrite``)."""
    if path is None:
        return None
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {p} is a file; give a folder")
    if p.is_dir() and any(p.iterdir()) and not overwrite:
        raise ConfigError(f"{what} {p} is not empty; pass --overwrite to write into it (nothing was changed)")
    check_writable(p / "x", what)
    return p


def check_replaceable(path: Path, made_by_edgead: Callable[[Path], bool], what: str) -> None:
    """``--overwrite`` replaces only a folder edgead made (or an empty one), never an arbitrary folder.

    ``edgead export RUN --out runs --overwrite`` must not delete ``runs/`` with the run in it.
    """
    if path.is_dir() and any(path.iterdir()) and not made_by_edgead(path):
        raise ConfigError(
            f"{path} is not {what} (a folder edgead made); --overwrite replaces only that. "
            "Choose another --out (nothing was changed)"
        )


def make_dirs(path: str | Path) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


def atomic_write_with(
    path: str | Path, write: Callable[[Path], object], exclusive: bool = False, mode: int | None = None
) -> Path:
    """Let ``write`` create a temporary file beside ``path``, then rename it into place.

    The file is flushed to disk before the rename and gets the mode a plain open() would give
    under the umask, whoever wrote it (safetensors and torch.save create 0600 files); a failed
    write leaves nothing behind. ``exclusive``: a file that appeared at ``path`` since the command
    checked it is never replaced (a hard link, unlike a rename, fails on an existing name).
    ``mode``: the file's permissions instead of the umask's (a private key is never readable by others).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
        if exclusive:
            _link_new(tmp, p)
        else:
            os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def _link_new(tmp: Path, p: Path) -> None:
    try:
        os.link(tmp, p)
    except FileExistsError:
        raise ConfigError(
            f"{p} appeared while edgead was writing it; it was left as it is (pass --overwrite to replace it)"
        ) from None
    except OSError:  # a file system without hard links: the check at start is what remains
        if p.exists():
            raise ConfigError(f"{p} appeared while edgead was writing it; it was left as it is") from None
        os.replace(tmp, p)
        return
    tmp.unlink()


def atomic_write(path: str | Path, data: bytes | str, exclusive: bool = False, mode: int | None = None) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    raw = data.encode() if isinstance(data, str) else data
    return atomic_write_with(path, lambda tmp: tmp.write_bytes(raw), exclusive, mode)


def new_temp_dir(beside: Path, label: str) -> Path:
    """A fresh folder next to ``beside`` (same file system, so it can be renamed into place)."""
    beside.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{beside.name}.{label}-", dir=beside.parent))


def apply_umask(root: Path) -> None:
    """Folders 0777 and files 0666 under the umask, as a plain mkdir/open would have made them."""
    mask = _umask()
    for d, _dirs, files in os.walk(root):
        os.chmod(d, 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(d, f), 0o666 & ~mask)


def publish_dir(tmp: Path, out: Path, replace: bool = False) -> Path:
    """Move the finished folder ``tmp`` to ``out``, replacing exactly ``out`` if ``replace``.

    The old ``out`` is first renamed to a fresh hidden name (never a name that could hold the
    user's files), and only deleted once the new folder is in place. Without ``replace`` a folder
    that appeared at ``out`` since the start is left alone (rename() would replace an empty one).
    """
    apply_umask(tmp)
    if not out.exists():
        try:
            os.mkdir(out)  # claims the name: fails if anything took it meanwhile
        except FileExistsError:
            if not replace:
                raise ConfigError(f"{out} appeared while edgead was writing it; it was left as it is") from None
        else:
            os.replace(tmp, out)  # onto the empty folder just made
            return out
    elif not replace:
        raise ConfigError(f"{out} appeared while edgead was writing it; it was left as it is")
    old = new_temp_dir(out, "replaced")  # an empty placeholder: rename() may replace it
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)  # put the user's folder back
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out


@contextlib.contextmanager
def exclusive(path: str | Path, what: str, creating: bool = False) -> Iterator[None]:
    """One edgead command at a time changes ``path`` (a bundle): two ``calibrate`` runs would each write
    the manifest they read, and one history entry would be lost. The lock is ``.NAME.lock`` beside it,
    released by the system when the process ends, however it ends; temporary folders left beside
    ``path`` by a command that was killed are removed once the lock is held (nobody else can own them).
    ``creating``: ``path`` is made by this command; otherwise a path that does not exist is not locked
    (the command is about to say so, and leaves no lock file beside a mistyped name).
    """
    p = Path(path).absolute()
    if not creating and not p.exists():
        yield
        return
    try:
        fd = os.open(p.parent / f".{p.name}.lock", os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    except OSError:  # a read-only or missing folder: nothing there to change yet, so nothing to serialise
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s: waiting for another edgead command that is changing %s", what, p)
            fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in p.parent.glob(f".{p.name}.writing-*"):
            shutil.rmtree(stale, ignore_errors=True)
            log.info("removed %s, left by an interrupted command", stale)
        yield
    finally:
        os.close(fd)

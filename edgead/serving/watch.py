"""Bundles replaced on disk while served: checked whole, then swapped in atomically, or refused.

A served model holds the bundle it loaded; changing files under it changes nothing that is served.
``edgead serve`` polls each bundle: when its manifest changes, the new bundle is verified (every file's
sha256, calibration, its signature where trusted keys are set) and the new bundle's id is written into the
model's configuration in serve's own model repository (a private folder). Triton, polling that repository,
reloads the model and swaps versions only once the new one has loaded (requests in flight finish on the old
one); the model refuses a bundle other than the id it was given, and a bundle that fails either check is
refused while the old one keeps serving. No client can load or unload a model: Triton's repository API is
closed (server.CLOSED_APIS). Every response names its bundle (``bundle_id``), so no answer mixes the two.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..core.bundle import MANIFEST, load_bundle, manifest_id
from ..core.errors import EdgeadError
from ..core.outputs import atomic_write
from .repository import ServedBundle, check_servable, with_bundle_id
from .server import load_error

log = logging.getLogger(__name__)


def _fingerprint(root: Path) -> tuple:
    """Cheap change detector: size and mtime of every file (a copy in progress keeps changing it)."""
    try:
        return tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()))
    except OSError:
        return ()


class BundleWatcher:
    def __init__(
        self,
        models: list[ServedBundle],
        repository: Path,
        http_url: str,
        every_s: float,
        echo: Callable[[str], None] = print,
        log_file: Path | None = None,
        load_timeout_s: float = 600.0,
    ):
        """``repository``: the model repository Triton polls (serve's own); ``log_file``: Triton's log, where a
        reload that failed says why."""
        self.every_s, self.echo, self.http_url = every_s, echo, http_url
        self.repository, self.log_file, self.load_timeout_s = Path(repository), log_file, load_timeout_s
        self.groups: dict[Path, list[ServedBundle]] = {}
        for m in models:
            self.groups.setdefault(m.bundle, []).append(m)
        self.serving = {root: ms[0].bundle_id for root, ms in self.groups.items()}
        self.refused: dict[Path, tuple] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgead-bundle-watch", daemon=True)

    def start(self) -> BundleWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            for root in self.groups:
                try:
                    self.check(root)
                except Exception as exc:  # the watcher must never take the server down
                    log.warning("checking %s failed: %s", root, exc)

    def check(self, root: Path) -> str | None:
        """Reload the bundle at ``root`` if it changed and is whole; what happened, or None."""
        try:
            current = manifest_id(root / MANIFEST)
        except OSError:
            current = None  # being replaced: look again next time
        if current is None or current == self.serving[root]:
            return None
        fingerprint = _fingerprint(root)
        if self.refused.get(root) == fingerprint:
            return None  # refused as it is; a further change is looked at again
        try:
            bundle = load_bundle(root)  # every file against its sha256 (and the signature with trusted keys)
            check_servable(bundle)
            if bundle.id != current or manifest_id(root / MANIFEST) != current:
                raise EdgeadError("it changed again while it was checked")
            self._reload([m.name for m in self.groups[root]], current)
        except (EdgeadError, OSError) as exc:
            self.refused[root] = fingerprint
            message = (
                f"bundle {root} changed on disk but was refused ({exc}); still serving bundle {self.serving[root]}"
            )
            self.echo(message)
            return message
        old, self.serving[root] = self.serving[root], current
        self.refused.pop(root, None)
        message = f"bundle {root} reloaded: {old} -> {current} ({', '.join(m.name for m in self.groups[root])})"
        self.echo(message)
        return message

    def _reload(self, names: list[str], ident: str) -> None:
        """Write ``ident`` into the models' configurations and wait until Triton serves it; on a failed load the
        configurations are put back and the reason raised."""
        configs = {name: self.repository / name / "config.pbtxt" for name in names}
        before = {name: path.read_text() for name, path in configs.items()}
        offset = self.log_file.stat().st_size if self.log_file and self.log_file.is_file() else 0
        for name, path in configs.items():
            atomic_write(path, with_bundle_id(before[name], ident))
        deadline = time.monotonic() + self.load_timeout_s
        waiting = set(names)
        try:
            while waiting:
                waiting = {n for n in waiting if self._served_id(n) != ident}
                failed = self._failures(offset, waiting)
                if failed:
                    raise EdgeadError("; ".join(f"model {n} did not load it: {why}" for n, why in failed.items()))
                if waiting and time.monotonic() > deadline:
                    raise EdgeadError(
                        f"model {', '.join(sorted(waiting))} did not load it within {self.load_timeout_s:.0f} s"
                    )
                if waiting and self._stop.wait(0.2):
                    raise EdgeadError("serve is stopping")
        except BaseException:
            for name, path in configs.items():  # what serves now stays described by its configuration
                atomic_write(path, before[name])
            raise

    def _served_id(self, model: str) -> str | None:
        """The bundle id of the configuration Triton serves the model with (the open configuration API)."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/models/{model}/config", timeout=10) as r:
                config = json.loads(r.read())
        except (OSError, ValueError):
            return None
        return config.get("parameters", {}).get("bundle_id", {}).get("string_value")

    def _failures(self, offset: int, models: set[str]) -> dict[str, str]:
        """Load failures Triton logged for ``models`` since ``offset``, in loads it began after it (a load begun
        before the configuration changed is not this one)."""
        if not models or self.log_file is None or not self.log_file.is_file():
            return {}
        with open(self.log_file, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        found = {}
        for name in models:
            began = re.search(rf'"loading: {re.escape(name)}:\d+"', text)
            failed = began and re.search(rf"failed to load '{re.escape(name)}' version \d+: (.*)", text[began.end() :])
            if failed:
                found[name] = load_error(failed.group(1))
        return found

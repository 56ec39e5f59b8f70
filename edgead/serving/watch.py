"""Bundles replaced on disk while served: checked whole, then swapped in atomically, or refused.

A served model holds the bundle it loaded; changing files under it changes nothing that is served.
``edgead serve`` polls each bundle: when its manifest changes, the new bundle is verified (every file's
sha256, calibration) and the model is reloaded through Triton's repository API with the new bundle's
id in its configuration. Triton swaps versions only once the new one has loaded (requests in flight
finish on the old one); the model refuses a bundle other than the id it was given, and a bundle that
fails either check is refused while the old one keeps serving. Every response names its bundle
(``bundle_id``), so no answer mixes the two.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from ..core.bundle import MANIFEST, load_bundle
from ..core.errors import EdgeadError
from .model import bundle_id_of
from .repository import ServedBundle, check_servable
from .server import ADMIN_HEADER

log = logging.getLogger(__name__)


def _fingerprint(root: Path) -> tuple:
    """Cheap change detector: size and mtime of every file (a copy in progress keeps changing it)."""
    try:
        return tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()))
    except OSError:
        return ()


class BundleWatcher:
    def __init__(self, models: list[ServedBundle], http_url: str, every_s: float,
                 echo: Callable[[str], None] = print, admin_token: str | None = None):
        """``admin_token``: the value of the header Triton's model-repository API wants (TritonServer's)."""
        self.every_s, self.echo, self.http_url = every_s, echo, http_url
        self.headers = {ADMIN_HEADER: admin_token} if admin_token else None
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
            current = bundle_id_of(root / MANIFEST)
        except OSError:
            current = None  # being replaced: look again next time
        if current is None or current == self.serving[root]:
            return None
        fingerprint = _fingerprint(root)
        if self.refused.get(root) == fingerprint:
            return None  # refused as it is; a further change is looked at again
        try:
            bundle = load_bundle(root)  # every file against its sha256
            check_servable(bundle)
            if bundle_id_of(root / MANIFEST) != current:
                raise EdgeadError("it changed again while it was checked")
            for m in self.groups[root]:
                self._reload(m.name, current)
        except (EdgeadError, OSError) as exc:
            self.refused[root] = fingerprint
            message = (f"bundle {root} changed on disk but was refused ({exc}); "
                       f"still serving bundle {self.serving[root]}")
            self.echo(message)
            return message
        old, self.serving[root] = self.serving[root], current
        self.refused.pop(root, None)
        message = f"bundle {root} reloaded: {old} -> {current} ({', '.join(m.name for m in self.groups[root])})"
        self.echo(message)
        return message

    def _reload(self, model: str, ident: str) -> None:
        import tritonclient.http as http
        from tritonclient.utils import InferenceServerException

        client = http.InferenceServerClient(self.http_url.removeprefix("http://"), network_timeout=600.0)
        try:
            config = client.get_model_config(model)
            config.setdefault("parameters", {})["bundle_id"] = {"string_value": ident}
            client.load_model(model, config=json.dumps(config), headers=self.headers)  # a new configuration: reload
        except InferenceServerException as exc:
            raise EdgeadError(f"model {model} did not load it: {' '.join(str(exc).split())[:300]}") from None
        finally:
            client.close()

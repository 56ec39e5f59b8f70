"""Start NVIDIA Triton Inference Server on a model repository and wait until it serves, or say why not.

The ``tritonserver`` binary comes from the ``nvidia-pytriton`` wheel (``pip install "edgead[serve]"``)
or from a Triton installation (``--tritonserver /opt/tritonserver/bin/tritonserver``, NGC's container).
Its Python backend runs edgead inside a stub process; the stub must use this interpreter's libpython
and site-packages, which the environment set here arranges.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError, EdgeadError, MissingDependencyError
from .protocol import DEFAULT_PORTS

log = logging.getLogger(__name__)


CLOSED_APIS = "model-repository,shared-memory,trace,logging"
"""Triton's APIs that change what is served (load, unload) or the server itself. They are closed to every
client: restricted to a header value that no HTTP or gRPC request can carry (it holds a line break, which ends
an HTTP header and which gRPC refuses in metadata). There is no secret to steal: whoever reads Triton's command
line learns a value nobody can send. Inference, health, metadata, configuration and statistics stay open."""
CLOSED_HEADER = "edgead-closed"
_UNSENDABLE = "closed\n"


class ServeError(EdgeadError):
    """Triton could not start, a model did not load, or the server stopped."""


@dataclass(frozen=True)
class Endpoints:
    host: str = "0.0.0.0"
    http: int = DEFAULT_PORTS["http"]
    grpc: int = DEFAULT_PORTS["grpc"]
    metrics: int = DEFAULT_PORTS["metrics"]

    def url(self, kind: str) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        port = {"http": self.http, "grpc": self.grpc, "metrics": self.metrics}[kind]
        return f"{'grpc' if kind == 'grpc' else 'http'}://{host}:{port}"


def _bundled_tritonserver() -> tuple[Path, Path, Path]:
    """(binary, libraries folder, Python-backend stub for this interpreter) from the nvidia-pytriton wheel."""
    try:
        from pytriton.utils.distribution import get_libs_path, get_root_module_path, get_stub_path
    except ImportError:
        raise MissingDependencyError(
            'serving needs Triton Inference Server: pip install "edgead[serve]" '
            "(or give --tritonserver PATH of an installed tritonserver)"
        ) from None
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = get_stub_path(version)
    binary = get_root_module_path() / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file() or not Path(stub).is_file():
        raise ServeError(
            f"the nvidia-pytriton install has no tritonserver or no Python-backend stub for Python "
            f"{version} ({binary}); reinstall it"
        )
    return binary, Path(get_libs_path()), Path(stub)


def load_error(text: str) -> str:
    """A model's load error without Triton's wrapping and the Python stack: 'edgead: ...' where edgead said it."""
    text = text.split("\\n\\nAt:")[0].split("\n\nAt:")[0].rstrip('"')
    return text[text.index("edgead: ") :] if "edgead: " in text else text


def _in_triton_child() -> None:
    """Before Triton starts: files and shared-memory regions it makes are its account's alone (umask 077: the
    frames it exchanges with its Python backends are not readable by other users), and on Linux it gets SIGTERM
    when the thread that started it dies, even by SIGKILL, so no orphaned server keeps the ports
    (PR_SET_PDEATHSIG, as PyTriton does)."""
    os.umask(0o077)
    if sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` ports free on ``host`` now (for test and benchmark servers on loopback)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def check_ports_free(endpoints: Endpoints) -> None:
    """Each port valid, distinct and free: a port in use would have Triton fail after it started, and the
    readiness probe ask the other server."""
    ports = {kind: getattr(endpoints, kind) for kind in ("http", "grpc", "metrics")}
    for a, b in (("http", "grpc"), ("http", "metrics"), ("grpc", "metrics")):
        if ports[a] == ports[b]:
            raise ConfigError(f"--{a}-port and --{b}-port are both {ports[a]}; give each its own port")
    for kind in ("http", "grpc", "metrics"):
        port = getattr(endpoints, kind)
        if not 1 <= port <= 65535:
            raise ConfigError(f"--{kind}-port must be 1..65535, got {port}")
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((endpoints.host, port))
            except OSError as exc:
                raise ServeError(
                    f"cannot listen on {endpoints.host}:{port} (--{kind}-port): {exc.strerror}; "
                    "another server uses it, give another port"
                ) from None


class TritonServer:
    """``with TritonServer(repo, endpoints): ...`` runs tritonserver until the block ends.

    ``poll_every_s``: Triton looks at the model repository this often and reloads a model whose configuration
    changed (model control mode POLL: how ``edgead serve`` swaps a bundle replaced on disk, by rewriting its own
    private repository); None: what is loaded at start is served until the end (mode NONE). In both modes
    Triton refuses every load and unload request of a client.
    """

    def __init__(
        self,
        repository: Path,
        endpoints: Endpoints = Endpoints(),
        tritonserver: str | None = None,
        log_file: Path | None = None,
        startup_timeout_s: float = 180.0,
        env: dict[str, str] | None = None,
        poll_every_s: float | None = None,
    ):
        """``env``: variables for the server (and edgead inside it) on top of this process's; never a secret
        (another user cannot read a process's environment, but its children inherit it)."""
        self.repository, self.endpoints, self.env = Path(repository), endpoints, dict(env or {})
        self.tritonserver, self.startup_timeout_s = tritonserver, startup_timeout_s
        self.poll_every_s = poll_every_s
        self._own_log = log_file is None
        self._workspace = Path(tempfile.mkdtemp(prefix="edgead-triton-"))
        self.log_file = Path(log_file) if log_file else self._workspace / "tritonserver.log"
        self.process: subprocess.Popen | None = None

    # -- start ------------------------------------------------------------------------------
    def _command_and_env(self) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, **self.env}
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        paths = [libdir] if libdir else []  # the stub loads libpython: this interpreter's, not the system's
        if self.tritonserver:
            binary = Path(self.tritonserver)
            if not binary.is_file():
                raise ConfigError(f"--tritonserver {binary}: no such file")
            backend_args: list[str] = []
        else:
            binary, libs, stub = _bundled_tritonserver()
            backends = self._workspace / "backends" / "python"  # the wheel's backend with this Python's stub
            backends.mkdir(parents=True)
            for f in (binary.parent.parent / "backends" / "python").iterdir():
                if f.is_file():
                    (backends / f.name).symlink_to(f)
            (backends / "triton_python_backend_stub").symlink_to(stub)
            paths.append(str(libs))
            backend_args = [f"--backend-directory={backends.parent}"]
        env["LD_LIBRARY_PATH"] = ":".join(paths + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p])
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the stub's site-packages
        e = self.endpoints
        if self.poll_every_s is None:
            control = ["--model-control-mode=none"]
        else:
            control = ["--model-control-mode=poll", f"--repository-poll-secs={max(1, math.ceil(self.poll_every_s))}"]
        closed = f"{CLOSED_APIS}:{CLOSED_HEADER}={_UNSENDABLE}"
        command = [
            str(binary),
            f"--model-repository={self.repository}",
            *backend_args,
            f"--http-address={e.host}",
            f"--http-port={e.http}",
            f"--grpc-address={e.host}",
            f"--grpc-port={e.grpc}",
            f"--metrics-address={e.host}",
            f"--metrics-port={e.metrics}",
            *control,
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--log-verbose=0",
            "--exit-timeout-secs=10",
            f"--http-restricted-api={closed}",
            f"--grpc-restricted-protocol={closed}",
        ]
        return command, env

    def start(self) -> TritonServer:
        check_ports_free(self.endpoints)
        command, env = self._command_and_env()
        log.info("starting %s", " ".join(command))
        out = open(self.log_file, "ab")
        try:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_in_triton_child,
            )
        except OSError as exc:
            raise ServeError(f"cannot start {command[0]}: {exc}") from None
        finally:
            out.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        ready = f"{self.endpoints.url('http')}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServeError(self._why_down())
            try:
                with urllib.request.urlopen(ready, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise ServeError(f"Triton did not become ready within {self.startup_timeout_s:.0f} s; its log: {self.log_file}")

    def _why_down(self) -> str:
        """What the log says went wrong: each model's load error, or the server's own."""
        text = self.log_file.read_text(errors="replace") if self.log_file.is_file() else ""
        reasons = [
            f"model {m.group(1)} did not load: {load_error(m.group(2))}"
            for m in re.finditer(r"failed to load '([^']+)' version \d+: (.*)", text)
        ]
        if not reasons:
            reasons = [m.group(1).strip().rstrip('"') for m in re.finditer(r'^E\S+ \S+ \d+ \S+\] "(.*)$', text, re.M)]
        if not reasons:  # an option Triton refused: its usage text, then the reason on the last line
            last = [line.strip() for line in text.splitlines() if line.strip()]
            reasons = last[-1:]
        code = self.process.returncode if self.process else None
        self._keep_log()
        detail = "; ".join(dict.fromkeys(reasons)) or "no reason in its log"
        return f"Triton stopped (exit code {code}): {detail} (log: {self.log_file})"

    def _keep_log(self) -> None:
        if self._own_log and self.log_file.is_file():  # the workspace goes; the log stays for the reader
            kept = Path(tempfile.gettempdir()) / f"edgead-tritonserver-{os.getpid()}.log"
            shutil.copyfile(self.log_file, kept)
            self.log_file = kept

    # -- run and stop -----------------------------------------------------------------------
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        assert self.process is not None
        return self.process.wait()

    def request_stop(self) -> None:
        """Ask Triton to unload its models and exit (safe in a signal handler: it does not wait)."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGINT)  # Triton unloads its models and exits
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self._workspace, ignore_errors=True)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

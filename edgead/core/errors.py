"""Typed errors: each one is printed by the CLI as a single line with a non-zero exit code.

Messages follow one rule: say what was received, what was expected, and how to fix it.
"""

from __future__ import annotations


class EdgeadError(Exception):
    """Base class of every error edgead raises on purpose (never a bug)."""

    exit_code = 1


class ConfigError(EdgeadError):
    """A configuration file, option or override is invalid."""

    exit_code = 2


class DataError(EdgeadError):
    """A dataset folder, image or mask is missing, empty or unreadable."""


class InputError(EdgeadError):
    """An image handed to the runtime has the wrong type, shape or channel count."""


class BundleError(EdgeadError):
    """A bundle is missing, corrupt, of an unsupported schema, or built for other hardware."""


class BackendError(EdgeadError):
    """An inference backend cannot be created or fails to run."""


class MissingDependencyError(EdgeadError):
    """An optional dependency is not installed; the message names the pip command."""


class ExportError(EdgeadError):
    """Exporting a stage or building an engine failed."""


class ParityError(ExportError):
    """An exported graph or engine disagrees with its reference beyond tolerance."""


class SourceError(EdgeadError):
    """A camera, stream, video or image folder cannot be opened."""


def require(module: str, install: str, purpose: str):
    """Import an optional dependency or raise with the exact install command.

    ``install`` is what to run, e.g. ``pip install "edgead[train]"``.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module}', which is not installed ({exc}); install it with: {install}"
        ) from None

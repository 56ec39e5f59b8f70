"""Methods: the registry and each built-in method's declarations (configuration section, manifest
parameters, stages), all torch-free. The implementations live in each layer's folder:
``training/<method>``, ``export/<method>.py`` and ``runtime/pipelines/<method>.py``."""

from ..core.methods import (
    MethodSpec,
    all_methods,
    get_method,
    method_names,
    register,
    unregister,
)

__all__ = ["MethodSpec", "all_methods", "get_method", "method_names", "register", "unregister"]

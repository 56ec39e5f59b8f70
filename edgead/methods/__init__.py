"""Methods: the table of methods, and one folder per method holding all of it.

``edgead/methods/<name>/``: ``__init__.py`` declares it (configuration section, manifest parameters, stages,
its ``SPEC``; torch-free), ``pipeline.py`` runs its stages at run time (torch-free), ``export.py`` writes its
bundle and ``train.py`` (with any helper modules beside it) trains it (PyTorch); README.md gives the paper,
where edgead departs from it, and its results. Adding a method is such a folder and one entry in the table
(``edgead.core.methods.METHODS``); shared code never imports a method's folder (tests/test_layers.py).
"""

from ..core.methods import (
    MethodSpec,
    all_methods,
    get_method,
    method_names,
    register,
    unregister,
)

__all__ = ["MethodSpec", "all_methods", "get_method", "method_names", "register", "unregister"]

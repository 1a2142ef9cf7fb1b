"""Loading config files by path (``configs/`` is a folder, not a package).

A variant config imports the config it extends with :func:`sibling`, so that it
works however it is loaded: by ``gdtx-train --config``, by a test, or from a
notebook, whatever the working directory and ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import os
import types


def load(path: str | os.PathLike) -> types.ModuleType:
    """Imports the config file at ``path`` as a fresh module."""
    path = os.fspath(path)
    name = "gdtx_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sibling(file: str, name: str) -> types.ModuleType:
    """Imports ``<name>.py`` from the directory of ``file`` (pass ``__file__``)."""
    return load(os.path.join(os.path.dirname(os.path.abspath(file)), f"{name}.py"))

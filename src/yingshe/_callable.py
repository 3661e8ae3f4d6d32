"""Packages that are also functions: `yingshe.train(config)` and `import yingshe.train.trainer`.

`yingshe.train`, `yingshe.evaluate`, `yingshe.tune` and `yingshe.export` name both a function of
the API and a subpackage. Binding the function to the name breaks `import yingshe.train.trainer
as t` (Python resolves it with getattr(yingshe, "train")) and is undone by the import system the
moment a submodule is imported; so the name stays the subpackage, and the subpackage's module
object is made callable, forwarding calls to the function. One class, set on each of the four.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class CallableModule(types.ModuleType):
    """A module whose call runs the function named by its `__call_target__` ("module:name")."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__call_function__()(*args, **kwargs)

    def __call_function__(self) -> Any:
        module, _, name = self.__dict__["__call_target__"].partition(":")
        return getattr(importlib.import_module(module), name)


def make_callable(module_name: str, target: str) -> None:
    """Make the (already imported) module `module_name` callable as the function `target`."""
    module = sys.modules[module_name]
    module.__call_target__ = target
    module.__class__ = CallableModule

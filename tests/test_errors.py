"""The exception tree of collector/core/errors.py is the whole tree: every exception class the project
defines derives from CollectorError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import adapters
import collector
import dashboards
from collector.core import errors
from collector.core.errors import CollectorError

PACKAGES = (collector, adapters, dashboards)
SKIP = ("_pb2", "__main__")


def project_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith(SKIP):
                continue
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == info.name:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


@pytest.mark.parametrize("exc", project_exceptions(), ids=lambda e: e.__qualname__)
def test_every_project_exception_derives_from_collector_error(exc: type[BaseException]) -> None:
    """Test that the exception is part of the one tree drawn in collector/core/errors.py."""
    assert issubclass(exc, CollectorError)
    assert exc.__name__ in (errors.__doc__ or ""), "add it to the tree in collector/core/errors.py's docstring"

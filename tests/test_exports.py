"""The public namespace: ``__all__`` sorted and complete, documented, reported as ``asyncq``."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import inspect
import sys
import types

import pytest

import asyncq
import asyncq.exceptions

PUBLIC = sorted(asyncq.__all__)
DEFINED = [name for name in PUBLIC if inspect.isclass(getattr(asyncq, name))] + [
    name for name in PUBLIC if inspect.isfunction(getattr(asyncq, name))
]


def test_all_is_sorted_and_has_no_duplicates() -> None:
    assert asyncq.__all__ == sorted(set(asyncq.__all__))


@pytest.mark.parametrize("name", PUBLIC)
def test_every_name_in_all_is_importable(name: str) -> None:
    module = importlib.import_module("asyncq")
    assert isinstance(name, str)
    assert getattr(module, name) is getattr(asyncq, name)


def test_every_public_attribute_is_in_all() -> None:
    public = {
        name
        for name, value in vars(asyncq).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(asyncq.__all__)


def test_every_exception_is_exported_from_the_package() -> None:
    assert set(asyncq.exceptions.__all__) <= set(asyncq.__all__)
    for name in asyncq.exceptions.__all__:
        assert getattr(asyncq, name) is getattr(asyncq.exceptions, name)


def test_errors_share_one_root() -> None:
    errors = [
        getattr(asyncq, name)
        for name in asyncq.exceptions.__all__
        if name not in {"Retry", "Reject", "CircuitOpen"}  # signals a handler raises, not errors
    ]
    assert all(issubclass(e, asyncq.AsyncqError) for e in errors)
    assert not issubclass(asyncq.Retry, asyncq.AsyncqError)
    assert not issubclass(asyncq.Reject, asyncq.AsyncqError)
    assert not issubclass(asyncq.CircuitOpen, asyncq.AsyncqError)


@pytest.mark.parametrize("name", DEFINED)
def test_classes_and_functions_have_their_own_docstring(name: str) -> None:
    obj = getattr(asyncq, name)
    # vars(), not inspect.getdoc(): a class must not borrow its base's docstring.
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__
    assert doc
    assert doc.strip()


@pytest.mark.parametrize("name", [n for n in DEFINED if inspect.isclass(getattr(asyncq, n))])
def test_public_methods_and_properties_have_docstrings(name: str) -> None:
    cls = getattr(asyncq, name)
    missing = []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        target = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if (inspect.isfunction(target) or isinstance(value, property)) and not target.__doc__:
            missing.append(attr)
    assert missing == []


@pytest.mark.parametrize("name", DEFINED)
def test_reported_module_is_public_and_finds_the_object(name: str) -> None:
    obj = getattr(asyncq, name)
    module = obj.__module__
    # Defined in a private module means shown as asyncq.X (httpx does the same).
    assert not any(part.startswith("_") for part in module.split(".")), module
    assert module in {"asyncq", "asyncq.exceptions"}
    assert getattr(sys.modules[module], obj.__name__) is obj


def test_reprs_show_the_public_path() -> None:
    assert repr(asyncq.App) == "<class 'asyncq.App'>"
    assert repr(asyncq.JobRecord) == "<class 'asyncq.JobRecord'>"
    assert asyncq.current_job.__module__ == "asyncq"


def test_version_matches_the_installed_distribution() -> None:
    assert asyncq.__version__ == importlib.metadata.version("asyncq")


def test_the_package_is_marked_typed() -> None:
    assert importlib.resources.files("asyncq").joinpath("py.typed").is_file()

"""Given: what docs/backends.md's factory of a store has in scope in tests/conftest.py.

"Your" store is asyncq's Redis store, under the name the fragment imports
(``asyncq.backends.mystore``), on the test Redis. This runs in a fresh
interpreter, as pytest's marks are only checked against a configuration.
"""

import sys
import types
from pathlib import Path  # noqa: F401 - the fragment's annotations
from typing import Any  # noqa: F401

import pytest  # noqa: F401
from tests.conftest import REDIS_URL, unique_namespace  # noqa: F401

from asyncq.backends.redis import RedisBackend

mystore = types.ModuleType("asyncq.backends.mystore")
mystore.MyStoreBackend = RedisBackend  # type: ignore[attr-defined]
sys.modules[mystore.__name__] = mystore


class _Request:
    """The fixture request of a test that asks for the store: its URL comes from a fixture."""

    def getfixturevalue(self, name: str) -> str:
        assert name == "mystore_url"
        return REDIS_URL

"""Given (a pytest plugin): the reader's sync ``client`` fixture, Flask's test client of their site.

docs/testing.md's sync test posts its signup form through it (``shop/signup.py``).
"""

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from shop.signup import site


@pytest.fixture
def client() -> Iterator[FlaskClient]:
    with site.test_client() as client:
        yield client

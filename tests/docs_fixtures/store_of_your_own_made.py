"""Then: docs/backends.md's factory makes an unopened store in a namespace of its own.

It opens, its cleanup drops what it stored, and its row names the factory.
"""

import anyio

backend, cleanup = _mystore(_Request(), Path("."))  # noqa: F821 - the fragment's and the given's
assert backend.namespace.startswith("t")


async def _open_and_drop() -> None:
    await backend.open()
    await cleanup()
    await backend.close()


anyio.run(_open_and_drop)
assert _BACKENDS[-1][2] is _mystore  # noqa: F821

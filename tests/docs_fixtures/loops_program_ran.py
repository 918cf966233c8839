"""Then: the program's ``main()`` ran its two loops; the thread's loop took the report off."""

main()  # noqa: F821 - the program's
assert consumed.wait(30), "consume() never ended"  # noqa: F821 - the given's
assert not failures, failures  # noqa: F821
assert len(removed) == 1, removed  # noqa: F821

"""Then: docs/backends.md's worker fragment settled nothing and claimed the waiting job."""

assert fused is not None  # noqa: F821 - the fragment's
assert applied == []  # noqa: F821
assert [lease.job.name for lease in leases] == ["ping"]  # noqa: F821

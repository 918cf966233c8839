"""Given: ``job_id``, one of the reader's jobs (docs/operations.md): a receipt due in an hour."""

receipt = Receipt("o-9", "x@y.z", 1)  # noqa: F821 - shop.py's, earlier on the page
# test_docs.py runs this with an await allowed at the top level
job_id = (await send_receipt.enqueue(receipt, delay=3600)).id  # noqa: F704, F821

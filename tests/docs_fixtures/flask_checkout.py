"""Then: docs/flask.md's routes answer through Flask's test client, enqueueing once per order."""

client = web.test_client()  # noqa: F821 - the Flask app of the sample
first = client.post("/orders/o-1/charge")
assert first.status_code == 202, first.text
assert first.json is not None
assert first.json["created"] is True
again = client.post("/orders/o-1/charge")
assert again.json == {"job": first.json["job"], "created": False}
status = client.get(f"/jobs/{first.json['job']}")
assert status.status_code == 200, status.text
assert status.json == {"state": "queued", "attempts": 0}

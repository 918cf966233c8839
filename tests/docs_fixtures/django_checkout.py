"""Then: docs/django.md's view, called with a request, stored the order and its job once."""

import json

from django.test import RequestFactory

answer = checkout(RequestFactory().post("/checkout"))  # noqa: F821 - the view
assert answer.status_code == 200, answer.content
order = json.loads(answer.content)["order"]
assert Order.objects.get(pk=order).cents == 500  # noqa: F821
[job] = app.sync.call(app.admin.jobs)  # noqa: F821 - shop.jobs's app, as the view imports it
assert (job.name, job.key) == ("shop.charge", str(order))
app.sync.close()  # noqa: F821

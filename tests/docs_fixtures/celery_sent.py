"""Then: the Celery producer sent one ``send_receipt`` to the queue ``emails``, due in a minute."""

from datetime import datetime, timedelta

assert app.conf.broker_url == "memory://"  # noqa: F821 - the sample's Celery app
with app.connection_for_read() as connection:  # noqa: F821
    queue = connection.SimpleQueue("emails")
    message = queue.get(timeout=5)
    message.ack()
    queue.close()
assert message.headers["task"].endswith("send_receipt")
assert message.headers["argsrepr"] == "('o-1', 'ann@example.com')"
due = datetime.fromisoformat(message.headers["eta"]) - datetime.now().astimezone()
assert timedelta(seconds=50) < due <= timedelta(seconds=60), due

"""Given: a Django project around docs/django.md's view: ``shop.settings``, its tables made.

It runs in a fresh interpreter (Django is set up once per process), in the
page's directory: the database is a SQLite file there, and the jobs go to
``./asyncq.db``.
"""

import os

import django
from django.core.management import call_command

os.environ["DJANGO_SETTINGS_MODULE"] = "shop.settings"
django.setup()
call_command("migrate", run_syncdb=True, verbosity=0)

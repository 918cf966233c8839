"""The reader's Django models (docs/django.md)."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    cents = models.IntegerField()

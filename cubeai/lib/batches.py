"""Deleting many old rows without locking a table for long.

Retention jobs delete by primary key, a few thousand rows per statement, each statement its
own short transaction: writers of new rows are never kept waiting behind one huge DELETE,
and an interrupted run just leaves less done.
"""

from django.db import transaction
from django.db.models import QuerySet


def delete_in_batches(queryset: QuerySet, *, batch_size: int) -> int:
    """Delete every row of `queryset`, `batch_size` primary keys at a time; returns how many."""
    model = queryset.model
    deleted = 0
    while True:
        batch = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not batch:
            return deleted
        with transaction.atomic():
            _, per_model = model._base_manager.filter(pk__in=batch).delete()
        deleted += per_model.get(model._meta.label, 0)
        if len(batch) < batch_size:
            return deleted

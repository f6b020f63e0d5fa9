"""Many rows at once: inserting them cheaply, deleting old ones without long locks.

Retention jobs delete by primary key, a few thousand rows per statement, each statement its
own short transaction: writers of new rows are never kept waiting behind one huge DELETE,
and an interrupted run just leaves less done.

The metering flush inserts its rows with `insert_rows`, one `executemany` with values that
only the fields which need it (dates, UUIDs, JSON) have Django prepare: `bulk_create` builds
a model instance and runs every field's preparation for each row, which is most of a
flush's time, and a flush shares the web process's interpreter lock with the requests.
"""

from django.db import connections, router, transaction
from django.db.models import Model, QuerySet

# Field types whose Python values the database drivers take as they are.
PLAIN = {
    "BigIntegerField",
    "BooleanField",
    "CharField",
    "FloatField",
    "IntegerField",
    "PositiveBigIntegerField",
    "PositiveIntegerField",
    "PositiveSmallIntegerField",
    "SmallIntegerField",
    "TextField",
}


def insert_rows(model: type[Model], rows: list[dict]) -> None:
    """INSERT `rows` (dicts of `model`'s field attnames; a missing field takes its
    default) in one `executemany`. No signals, no instances, no primary keys returned."""
    if not rows:
        return
    connection = connections[router.db_for_write(model)]
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    # Names from the model's metadata, quoted; every value is a parameter.
    sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608
        quote(model._meta.db_table),
        ", ".join(quote(field.column) for field in fields),
        ", ".join(["%s"] * len(fields)),
    )
    plain = [field.get_internal_type() in PLAIN for field in fields]
    defaults = {field.attname: field.get_default() for field in fields}
    values = []
    for row in rows:
        line = []
        for field, as_is in zip(fields, plain, strict=True):
            value = row[field.attname] if field.attname in row else defaults[field.attname]
            line.append(value if as_is else field.get_db_prep_save(value, connection))
        values.append(line)
    with connection.cursor() as cursor:
        cursor.executemany(sql, values)


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

"""Recompute the daily usage aggregates from the raw usage events still kept."""

import datetime

from django.core.management.base import BaseCommand, CommandError

from inference import usage


class Command(BaseCommand):
    help = (
        "Recompute the daily usage aggregates (inference.UsageDaily) from the raw usage events, "
        "from --since (YYYY-MM-DD), or from the first whole day kept (the day after the oldest "
        "raw event, which the retention purge may have cut). Earlier days are left alone."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="first day to recompute (UTC), YYYY-MM-DD")

    def handle(self, *args, since=None, **options):
        try:
            first = datetime.date.fromisoformat(since) if since else None
        except ValueError:
            raise CommandError("--since must be a date, YYYY-MM-DD.") from None
        written = usage.usage_daily_rebuild(since=first)
        self.stdout.write(f"{written} daily usage rows written.")

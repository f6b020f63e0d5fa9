"""CSV downloads of the pages and the management API (usage, audit)."""

import csv
from collections.abc import Iterable, Sequence

from django.http import StreamingHttpResponse

# A cell starting with one of these runs as a formula in a spreadsheet (a token or target
# named `=HYPERLINK(...)`), so it is written with a leading quote.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


class _Echo:
    """A file-like object that hands back what is written, for streaming."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[dict], columns: Sequence[str]) -> Iterable[str]:
    """The header, then each row, as CSV lines."""
    writer = csv.DictWriter(_Echo(), fieldnames=columns, extrasaction="ignore")
    yield writer.writeheader()
    for row in rows:
        yield writer.writerow({key: csv_cell(value) for key, value in row.items()})


def csv_download(rows: Iterable[dict], columns: Sequence[str], filename: str):
    """A streamed CSV attachment (rows may be a lazy iterator over many)."""
    response = StreamingHttpResponse(csv_lines(rows, columns), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response

"""Path converters shared by every app's URLs (registered in `cubeai.urls`)."""

# The largest number of digits that always fits the databases' 64-bit integer columns.
ID_DIGITS = 18


class IdConverter:
    """A row id in a path: `<id:name>`. Unlike `<int:name>`, a number too long for the
    database matches no route (a 404 in the API's envelope) instead of overflowing the
    query (a 500)."""

    regex = f"[0-9]{{1,{ID_DIGITS}}}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)

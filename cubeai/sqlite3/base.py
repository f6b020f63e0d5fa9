"""Django's SQLite backend, creating the folder of its database file when it first opens it.

The embedded default keeps its database under `CUBEAI_DATA_DIR` (`var/` in a checkout). A
fresh clone, a test run or a node pointed at an empty volume has no such folder yet, and
SQLite can create a file but not its folder. Every process opens the database through here
(`migrate`, the web server, Celery, the test database), so none needs a step of its own.
"""

from pathlib import Path

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    """SQLite, making the database file's folder before it opens a connection."""

    def get_new_connection(self, conn_params):
        name = conn_params["database"]
        # Django opens every name as a URI; a plain path is a file, a `file:` URI is left alone.
        is_uri = isinstance(name, str) and name.startswith("file:")
        if not (is_uri or self.creation.is_in_memory_db(name)):
            Path(name).parent.mkdir(parents=True, exist_ok=True)
        return super().get_new_connection(conn_params)

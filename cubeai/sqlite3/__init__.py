"""Django's SQLite backend, creating the folder of its database file when it first opens it."""

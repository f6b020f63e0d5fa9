#!/usr/bin/env python
"""Django's command-line utility for Cube AI."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cubeai.settings")
    # The command line of a checkout runs in development mode unless told otherwise; the
    # processes that serve (uvicorn cubeai.asgi, celery -A cubeai) default to production.
    os.environ.setdefault("DJANGO_DEBUG", "true")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()

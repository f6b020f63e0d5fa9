#!/usr/bin/env python
"""Django's command-line utility for Cube AI."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cubeai.settings")
    # No DJANGO_DEBUG default here: like every other entry point, manage.py is in production
    # mode unless DJANGO_DEBUG=true is set (make run, make test and make manage set it).
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()

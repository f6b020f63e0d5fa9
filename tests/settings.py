"""The test suite's settings: the project's own, in development mode.

DEBUG is off unless asked for (`cubeai/settings.py`), so the suite asks for it here, before
the settings are read. The processes the tests start inherit the variable.
"""

import os

os.environ["DJANGO_DEBUG"] = "true"

from cubeai.settings import *  # noqa: F403

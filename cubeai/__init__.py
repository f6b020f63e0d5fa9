"""Cube AI project wiring: settings, URLs, ASGI, Celery and the project APIs."""

from cubeai.celery import app as celery_app

__all__ = ("celery_app",)

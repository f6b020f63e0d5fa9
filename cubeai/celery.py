"""The Celery application; tasks live in each app's tasks.py."""

import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cubeai.settings")

app = Celery("cubeai")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _metrics(sender: Celery, **kwargs) -> None:
    # Jobs by state and their durations, for every task of every app (cubeai/metrics.py).
    from cubeai.metrics import connect_celery_signals

    connect_celery_signals()


def celery_folders(conf) -> list[Path]:
    """The folders the configured broker, result backend and beat schedule write into."""
    folders = [Path(conf.beat_schedule_filename).parent]
    if conf.broker_url.startswith("filesystem://"):
        options = conf.broker_transport_options
        names = ("data_folder_in", "data_folder_out", "control_folder", "processed_folder")
        folders += [Path(options[name]) for name in names if name in options]
    if str(conf.result_backend).startswith("file://"):
        folders.append(Path(conf.result_backend.removeprefix("file://")))
    return folders


@app.on_after_configure.connect
def _create_folders(sender: Celery, **kwargs) -> None:
    # The filesystem broker, the file result backend and beat's schedule refuse to start
    # without their folders. Every process that sends or runs a task (web, worker, beat, a
    # worker started alone on an empty CUBEAI_DATA_DIR) configures the app first, so they
    # exist before anything uses them.
    for folder in celery_folders(sender.conf):
        folder.mkdir(parents=True, exist_ok=True)

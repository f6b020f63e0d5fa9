"""Transcription jobs: audio sent to a TEE-hosted model through the inference pipeline by a
Celery worker, with real progress, for the API (`/proxy/<domain-id>/v1/audio/transcriptions/
jobs`) and the domain page (`/domains/<id>/transcriptions/`). See README.md, "Transcription
jobs"."""

"""The Cube AI agent: the model server that runs inside each confidential VM.

It is a small ASGI app of its own (no Django, no database) that serves OpenAI-compatible
endpoints in front of a model runtime and answers attestation challenges. Start it with
``python -m agent``; see ``agent/README.md`` for its configuration.
"""

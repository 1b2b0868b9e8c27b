"""A service to copy: a responder that serves the actions in ``actions.py``.
`make new-service NAME=...` copies this folder under a new name (see docs/template.md)."""

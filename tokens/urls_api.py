"""Token operations in the management API (session-authenticated only)."""

urlpatterns: list = []

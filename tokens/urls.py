"""Profile → Personal Access Tokens pages."""

urlpatterns: list = []

"""Fixtures of the security suite: a backend played by the fake upstream process."""

import pytest

from inference import metering, upstream
from inference.models import Backend, Deployment, Model
from inference.registry import registry
from tests.inference.conftest import agent_url, fake_upstream_url  # noqa: F401 (fixtures)


class _NoTurns(dict):
    """Every model's round-robin turn stays at its first deployment."""

    def __getitem__(self, key) -> int:
        return 0

    def __setitem__(self, key, value) -> None:
        pass


@pytest.fixture
def fake_backends(fake_upstream_url, settings, monkeypatch):  # noqa: F811
    """`backend(name)` makes a backend row served by the fake upstream, and
    `deploy(model, [(backend, upstream_model), ...])` a model on them, tried in the order of
    the backends' names (no round-robin). Routing reloads at once; the registry's state is
    forgotten afterwards."""
    settings.CUBEAI_ROUTING_REFRESH_SECONDS = 0
    monkeypatch.setattr(registry, "_turns", _NoTurns())
    registry.snapshot = None
    registry.breakers.clear()

    class Fakes:
        url = fake_upstream_url

        def backend(self, name: str) -> Backend:
            return Backend.objects.create(
                name=name,
                base_url=f"{fake_upstream_url}/v1",
                kind="openai",
                allow_not_confidential=True,
            )

        def deploy(self, name: str, deployments, tasks=("chat",)) -> Model:
            model = Model.objects.create(name=name, tasks=list(tasks), context_length=2048)
            for backend, upstream_model in deployments:
                Deployment.objects.create(
                    model=model, backend=backend, upstream_model=upstream_model
                )
            return model

    metering.drain()
    yield Fakes()
    registry.snapshot = None
    registry.breakers.clear()


@pytest.fixture
async def pooled_client():
    """This test's event loop ends with it: close the loop's pooled upstream client too."""
    yield
    await upstream.session_close()

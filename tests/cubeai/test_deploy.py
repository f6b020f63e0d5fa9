"""The scaled-out example in deploy/: Docker Compose validates it against the Compose
specification (`docker-compose config`, the Debian package; it needs no Docker daemon), and
what it resolves to runs the platform the way the README's "Production" section says."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cubeai.server import HttpToolsProtocol

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

pytestmark = pytest.mark.skipif(
    not shutil.which("docker-compose"),
    reason="docker-compose is not installed (apt: docker-compose)",
)


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict:
    """The example as Compose resolves it (anchors merged, the env file read), with the
    example env file in place of the operator's `cubeai.env`."""
    folder = tmp_path_factory.mktemp("deploy")
    for name in ("docker-compose.yml", "nginx.conf"):
        shutil.copy(DEPLOY / name, folder / name)
    shutil.copy(DEPLOY / "cubeai.env.example", folder / "cubeai.env")
    done = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"],
        cwd=folder, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def command(service: dict) -> str:
    value = service["command"]
    return " ".join(value) if isinstance(value, list) else value


def mounts(service: dict) -> dict[str, str]:
    """{target: source} of a service's volumes (`source:target[:mode]`, as Compose prints them)."""
    return {m.split(":")[1]: m.split(":")[0] for m in service.get("volumes", [])}


def test_the_web_nodes_run_the_production_server(compose) -> None:
    web = compose["services"]["web"]
    line = command(web)
    # The protocol with the header-read timeout (slowloris), as `make run` and the README use.
    protocol = re.search(r"--http (\S+)", line).group(1)
    module, name = protocol.split(":")
    assert (module, name) == (HttpToolsProtocol.__module__, HttpToolsProtocol.__name__)
    assert "--loop uvloop" in line and "--no-server-header" in line
    assert "cubeai.asgi:application" in line
    assert web["environment"]["DJANGO_SECRET_KEY"]  # from the env file
    assert web["environment"]["REDIS_URL"].startswith("redis://redis:")


def test_web_nodes_and_workers_share_the_data_folder(compose) -> None:
    # Uploaded audio of a transcription job goes from a web node to a worker through
    # CUBEAI_DATA_DIR (/app/var in the image).
    def data_volume(name: str) -> str:
        return mounts(compose["services"][name]).get("/app/var", f"nothing in {name}")

    assert data_volume("web") == data_volume("worker") == data_volume("beat")
    assert data_volume("web") in compose["volumes"]


def test_static_files_are_in_the_image(compose) -> None:
    # With DEBUG off a web node serves static files from STATIC_ROOT, which exists only if the
    # image collected them (a `collectstatic` in another container stays in that container).
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "DJANGO_DEBUG=false" in dockerfile
    copy = dockerfile.index("COPY . .")
    collect = dockerfile.index("manage.py collectstatic")
    assert collect > copy
    assert "collectstatic" not in command(compose["services"]["migrate"])


def test_the_load_balancer_passes_websocket_upgrades(compose) -> None:
    # The chat page streams over a WebSocket on /ws/; without these headers nginx turns the
    # handshake into a plain request.
    conf = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"proxy_set_header Upgrade \$http_upgrade;", conf)
    assert re.search(r"proxy_set_header Connection \$connection_upgrade;", conf)
    assert re.search(r"map \$http_upgrade \$connection_upgrade", conf)
    assert "proxy_buffering off;" in conf  # SSE streams pass as they come
    lb = compose["services"]["lb"]
    assert mounts(lb)["/etc/nginx/nginx.conf"].endswith("/nginx.conf")


def test_a_client_cannot_choose_the_address_the_web_nodes_see(compose) -> None:
    # Found by an audit: nginx appended to the client's own X-Forwarded-For and the web nodes
    # trusted it from anyone, so a client picked its address and escaped the per-address
    # limit on failed authentications.
    conf = (DEPLOY / "nginx.conf").read_text()
    forwarded = re.findall(r"^\s*proxy_set_header\s+X-Forwarded-For\s+(\S+);", conf, re.M)
    assert forwarded == ["$remote_addr"]
    assert "$proxy_add_x_forwarded_for" not in re.sub(r"#.*", "", conf)
    web = compose["services"]["web"]
    trusted = re.search(r'--forwarded-allow-ips[ =]"?([^" ]+)', command(web))
    if trusted and trusted.group(1) != "127.0.0.1":
        # Trusting forwarded headers from other hosts is sound only if no one but the balancer
        # can reach the web nodes: they publish no port.
        assert not web.get("ports")
    assert compose["services"]["lb"]["ports"]


@pytest.mark.parametrize("name", ["web", "worker"])
def test_each_node_adds_up_its_processes_metrics_from_a_folder_emptied_at_start(
    compose, name, tmp_path
) -> None:
    # Two uvicorn workers (and a worker's prefork children) each keep their own samples: only
    # prometheus-client's multiprocess mode makes one scrape count them all, and files left by
    # processes from before a restart must not be added in again.
    service = compose["services"][name]
    folder = service["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert folder.startswith("/tmp/")  # the container's own, not the shared data volume
    assert not any(folder.startswith(target) for target in mounts(service))
    line = command(service)
    script = re.fullmatch(r"sh -c '(.*)'", line.strip(), re.S).group(1).replace("$$", "$")
    setup, program = script.split("exec ", 1)
    assert program.split()[0] == ("uvicorn" if name == "web" else "celery")
    stale = tmp_path / "metrics"
    stale.mkdir()
    (stale / "counter_123.db").write_text("from a process before the restart")
    done = subprocess.run(
        ["sh", "-c", setup + "exec true"],
        env={"PROMETHEUS_MULTIPROC_DIR": str(stale), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert stale.is_dir() and not list(stale.iterdir())


def test_metrics_need_the_token_from_the_env_file_and_the_worker_serves_its_own(compose) -> None:
    web, worker = compose["services"]["web"], compose["services"]["worker"]
    assert "--workers 2" in command(web)
    assert len(web["environment"]["CUBEAI_METRICS_TOKEN"]) >= 32
    assert worker["environment"]["CUBEAI_METRICS_WORKER_PORT"] == "9100"
    assert worker["environment"]["CUBEAI_METRICS_WORKER_HOST"] == "0.0.0.0"
    readme = (DEPLOY / "README.md").read_text()
    section = readme[readme.index("## Metrics") :]
    for words in ("CUBEAI_METRICS_TOKEN", "PROMETHEUS_MULTIPROC_DIR", "grafana-dashboard.json"):
        assert words in section

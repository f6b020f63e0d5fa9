"""The official OpenAI Node SDK end to end: node's own test runner runs tests/node against the
real gateway (uvicorn) and the real agent with its real models.

The SDK (`openai` 6.x) is pinned in tests/node/package-lock.json and installed with `npm ci`
into tests/node/node_modules. Without `node` (or `npm`) on the PATH the suite is skipped and
says so; `.ci/run` installs Node so that it always runs there.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.inference.conftest import GATEWAY_MAX_AUDIO_BYTES

pytestmark = [pytest.mark.e2e, pytest.mark.models, pytest.mark.django_db]

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SUITE = NODE_DIR / "openai.test.mjs"


def _installed_as_locked() -> bool:
    """Whether node_modules holds exactly the versions package-lock.json pins."""
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    for path, entry in lock["packages"].items():
        if not path:
            continue
        manifest = NODE_DIR / path / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != entry["version"]:
            return False
    return True


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` executable, with the pinned SDK installed under tests/node."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = "node" if node is None else "npm"
        pytest.skip(f"{missing} is not on the PATH: the Node SDK suite (tests/node) did not run")
    if not _installed_as_locked():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel", "error"],
            cwd=NODE_DIR,
            check=True,
            timeout=300,
        )
    return node


def test_the_node_sdk_passes_its_suite_against_the_real_stack(stack, speech, node):
    english = speech("The quick brown fox jumps over the lazy dog.")
    german = speech("Guten Morgen, wie geht es dir heute? Das Wetter ist sehr schön.", voice="de")
    env = {
        **os.environ,
        "CUBE_BASE_URL": stack.base_url(stack.alpha),
        "CUBE_TOKEN": stack.alice_token,
        "CUBE_SPEECH_EN": str(english),
        "CUBE_SPEECH_DE": str(german),
        "CUBE_MAX_AUDIO_BYTES": str(GATEWAY_MAX_AUDIO_BYTES),
    }
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", SUITE.name],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-8000:]
    # Every test in the file ran and passed: none skipped, none silently missing.
    expected = len(re.findall(r"^test\(", SUITE.read_text(), re.MULTILINE))
    totals = dict(re.findall(r"^# (\w+) (\d+)$", result.stdout, re.MULTILINE))
    assert totals["pass"] == str(expected), report[-8000:]
    assert totals["fail"] == totals["skipped"] == totals["todo"] == "0", report[-8000:]

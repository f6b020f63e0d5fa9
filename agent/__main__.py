"""``python -m agent``: serve the agent with uvicorn, configured from the environment."""

from __future__ import annotations

import logging
import sys

import uvicorn

from agent.app import create_app
from agent.config import AgentConfig, ConfigError


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = AgentConfig.load()
        app = create_app(config)
    except (ConfigError, OSError) as exc:
        logging.getLogger("agent").error("invalid configuration: %s", exc)
        return 2
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        # The gateway keeps a pool of connections to each agent; let them idle a while.
        timeout_keep_alive=30,
        log_level="info",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python studio.py` (or the console script `difflab-studio`): the difflab studio, a local web app.

The values are checked before Gradio starts (folders, port, sizes); the page is served on `host:port`
(127.0.0.1 by default) with Gradio's analytics off and no share link, until Ctrl-C.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from typing import Any

from omegaconf import DictConfig

from difflab.api import checks
from difflab.errors import ConfigError, UserError
from difflab.studio.service import Studio
from difflab.utils.entry import hydra_main

log = logging.getLogger(__name__)


class MissingPackageError(UserError, ImportError):
    """An optional package the command needs is not installed."""


def gradio_module() -> Any:
    """Gradio, imported with its analytics (and version check) turned off; a clear error when it is absent."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio  # an optional dependency (the `studio` extra)
    except ImportError:
        raise MissingPackageError("The studio needs Gradio, which is not installed: pip install -e '.[studio]' "
                                  "(or pip install gradio).") from None
    return gradio


def check_address(host: Any, port: Any) -> tuple[str, int]:
    """(host, port) to serve on, proven by binding it: port 0 picks a free one; a port in use or an address not of
    this machine is a ConfigError naming `host` and `port`."""
    host = str(host)
    port = checks.integer(port, "port", 0, "Pass port=7860, or port=0 for a free one.")
    if port > 65535:
        raise ConfigError.bad_value("port", f"{port} is not a TCP port", "Pass a port in 1..65535, or port=0.")
    try:
        address = socket.gethostbyname(host)
    except OSError:
        raise ConfigError.bad_value("host", f"{host!r} is not an address of this machine",
                                    "Use host=127.0.0.1 (the default).") from None
    with socket.socket(socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: closed connections in
        try:                                                      # TIME_WAIT do not hold the port
            s.bind((address, port))
        except OSError as err:
            raise ConfigError(f"Bad value for config keys `host` / `port`: cannot serve on {host}:{port} "
                              f"({err.strerror or err}; another studio on that port?). Pass port=0 for a free port, "
                              "another port=<n>, or host=127.0.0.1.") from None
        port = int(s.getsockname()[1])
    if not ipaddress.ip_address(address).is_loopback:
        log.warning("host=%s: the studio is reachable from other machines, without a password", host)
    return host, port


def serve(cfg: DictConfig) -> tuple[Any, str]:
    """Check the config, build the page and start serving it in the background; returns (Gradio app, URL)."""
    host, port = check_address(cfg.host, cfg.port)
    checks.inference_precision(cfg.precision, checks.inference_device(cfg.device))
    studio = Studio(cfg)  # the folders, sizes and output folder, before Gradio loads
    gradio_module()
    from difflab.studio.app import (  # imports Gradio, an optional dependency (the `studio` extra)
        build,
        launch,
    )

    demo = build(studio)
    return demo, launch(demo, host, port)


def run(cfg: DictConfig) -> None:
    """Serve the studio until interrupted."""
    demo, url = serve(cfg)
    log.info("difflab studio: open %s (Ctrl-C stops it)", url)
    print(f"difflab studio: open {url} (Ctrl-C stops it)", flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()


def main() -> None:
    """`python studio.py` and the `difflab-studio` console script: the Hydra app of conf/studio.yaml under the error
    contract."""
    hydra_main("studio", run, __name__)

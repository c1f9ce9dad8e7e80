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

from difflab.cli import checks
from difflab.errors import ConfigError, UserError

log = logging.getLogger(__name__)


class MissingPackageError(UserError, ImportError):
    """An optional package the command needs is not installed."""


def gradio_module() -> Any:
    """Gradio, imported with its analytics (and version check) turned off; a clear error when it is absent."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise MissingPackageError("The studio needs Gradio, which is not installed: pip install -e '.[studio]' "
                                  "(or pip install gradio).") from None
    return gradio


def free_port(host: str) -> int:
    """A TCP port nobody listens on at `host` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_address(host: Any, port: Any) -> tuple[str, int]:
    """(host, port) to serve on: port 0 picks a free one; a port in use or a host not of this machine is an error."""
    host = str(host)
    port = checks.integer(port, "port", 0, "Pass port=7860, or port=0 for a free one.")
    if port > 65535:
        raise ConfigError.bad_value("port", f"{port} is not a TCP port", "Pass a port in 1..65535, or port=0.")
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        raise ConfigError.bad_value("host", f"{host!r} is not an address of this machine",
                                    "Use host=127.0.0.1 (the default).") from None
    if not loopback:
        log.warning("host=%s: the studio is reachable from other machines, without a password", host)
    if port == 0:
        return host, free_port(host)
    with socket.socket(socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as err:
            raise ConfigError.bad_value("port", f"cannot serve on {host}:{port} ({err.strerror or err}; is another "
                                        "studio running?)", "Pass port=0 for a free port, or another port=<n>.") from None
    return host, port


def serve(cfg: DictConfig) -> tuple[Any, str]:
    """Check the config, build the page and start serving it in the background; returns (Gradio app, URL)."""
    host, port = check_address(cfg.host, cfg.port)
    checks.integer(cfg.max_models, "max_models", 1)
    checks.inference_precision(cfg.precision, checks.inference_device(cfg.device))
    gradio_module()
    from difflab.studio.app import build, launch
    from difflab.studio.service import Studio

    demo = build(Studio(cfg))
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


def _task(cfg: DictConfig) -> None:
    from difflab.cli.entry import user_errors

    with user_errors():
        run(cfg)


def main() -> None:
    """The console script `difflab-studio [overrides]`: `python studio.py` with difflab's conf/ folder."""
    import hydra

    from difflab.cli.entry import run_script
    from difflab.utils.config import conf_dir

    run_script(hydra.main(config_path=str(conf_dir()), config_name="studio", version_base="1.3")(_task))

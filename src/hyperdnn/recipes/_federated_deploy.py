"""The ``federated`` recipe on a running SuperLink: ``flwr run`` with the recipe's Flower app.

:func:`check_superlink` asks whether the address answers (a TCP connection within a time-out);
:func:`run_on_superlink` writes a Flower app (its ``pyproject.toml`` names the recipe's
:data:`~hyperdnn.recipes._federated_flower.server_app` and ``client_app``) and a Flower config
naming the SuperLink into a temporary folder, runs ``flwr run <app> hyperdnn --stream`` and
reads what the server app wrote. The SuperNodes (``flower-supernode --node-config
"partition-id=i"``) must already be connected; docs/federated.md shows the commands.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hyperdnn.engine.errors import UsageError

__all__ = ["parse_address", "check_superlink", "run_on_superlink", "APP_TOML"]

APP_TOML = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "hyperdnn-federated"
version = "1.0.0"
dependencies = ["flwr[simulation]==1.42.0"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "hyperdnn"

[tool.flwr.app.components]
serverapp = "hyperdnn_federated:server_app"
clientapp = "hyperdnn_federated:client_app"

[tool.flwr.app.config]
spec = ""
"""

APP_MODULE = """\"\"\"The federated recipe's Flower apps (see hyperdnn.recipes._federated_flower).\"\"\"
from hyperdnn.recipes import _federated_flower

server_app = _federated_flower.server_app
client_app = _federated_flower.client_app
"""


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``.

    Raises:
        ValueError: no port, or a port outside 1-65535.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--superlink: expected host:port (127.0.0.1:9093), got {address!r}")
    return host, int(port)


def check_superlink(address: str, timeout: float) -> None:
    """Raise :class:`UsageError` unless ``address`` accepts a connection within ``timeout`` s."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise UsageError(
            f"--superlink {address}: no answer within {timeout:g} s ({e.strerror or e}); "
            "start flower-superlink first (docs/federated.md)"
        ) from None


def run_on_superlink(spec: Mapping[str, Any], address: str, timeout: float, log: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """Run the pFedHN server app of ``spec`` on the SuperLink at ``address`` (its control API).

    Args:
        spec: the run's settings (``hyperdnn.recipes._federated_flower``'s ``spec``).
        address: ``host:port`` of the SuperLink's control API.
        timeout: the longest the whole run may take, in seconds.
        log: where ``flwr run``'s lines go.

    Returns:
        What the server app measured (accuracy per client, bytes, checksums, the
        hypernetwork's change).

    Raises:
        UsageError: a client id unknown to the server, clients that do not connect or answer
            in time, or ``flwr run`` failing (its last lines in the message).
    """
    from hyperdnn.recipes._federated_flower import FLOWER_ENV, encode_spec

    with tempfile.TemporaryDirectory(prefix="hyperdnn-flwr-") as tmp:
        app, home, result = Path(tmp, "app"), Path(tmp, "home"), Path(tmp, "result")
        for d in (app, home, result):
            d.mkdir()
        (app / "pyproject.toml").write_text(APP_TOML)
        (app / "hyperdnn_federated.py").write_text(APP_MODULE)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "hyperdnn"\n\n[superlink.hyperdnn]\naddress = "{address}"\ninsecure = true\n'
        )
        spec = {**spec, "result_dir": str(result)}
        env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(home)}
        cmd = [str(Path(sys.executable).parent / "flwr"), "run", str(app), "hyperdnn", "--stream",
               "--run-config", f'spec="{encode_spec(spec)}"']  # fmt: skip
        lines: list[str] = []
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        reader = threading.Thread(target=_read, args=(proc, lines, log), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and not any(result.iterdir()):
                if time.monotonic() > deadline:
                    raise UsageError(f"--superlink {address}: the run did not finish within {timeout:g} s")
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            reader.join(5)
        if (result / "error.json").exists():
            error = json.loads((result / "error.json").read_text())
            raise UsageError(f"--superlink {address}: {error['message']}")
        if not (result / "result.json").exists():
            tail = " | ".join(lines[-3:]) or "no output"
            raise UsageError(f"--superlink {address}: flwr run ended without a result ({tail})")
        return json.loads((result / "result.json").read_text())


def _read(proc: subprocess.Popen, lines: list[str], log: Callable[[str], None]) -> None:
    for line in proc.stdout or ():
        if line.strip():
            lines.append(line.strip())
            log(f"flwr: {line.strip()}")

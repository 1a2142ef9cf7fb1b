"""Runs a worker script as two JAX processes on loopback (CPU collectives over gloo)."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import Iterable

# What process 0 prints when the coordinator's port was taken between our probe and
# its bind (gRPC's "Failed to add port to server", then JAX's error). Process 1 would
# wait a minute for a coordinator that never starts, so the pair is stopped and rerun
# on another port.
_PORT_TAKEN = ("Failed to add port to server", "Failed to start RPC server")
_ATTEMPTS = 3


def _free_ports() -> Iterable[int]:
    """Ports the OS had free a moment ago (another process may still take one)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        yield port  # after the close: a generator suspended in the `with` would hold it


def run_two_processes(
    worker: pathlib.Path,
    tmp_path: pathlib.Path,
    *args: str,
    timeout: int,
    ports: Iterable[int] | None = None,
):
    """Starts ``worker PORT PID TMP_PATH *args`` for PID 0 and 1; fails with a worker's output.

    The workers get a clean JAX environment pinned to the CPU (also on an accelerator
    machine) and the repository on ``PYTHONPATH``; a hung worker is killed at ``timeout``.
    When the coordinator's port turns out to be taken, the pair is rerun on the next
    of ``ports`` (fresh free ports by default), up to 3 times.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(pathlib.Path(__file__).resolve().parents[1])
    ports = iter(_free_ports() if ports is None else ports)
    for _ in range(_ATTEMPTS):
        command = [sys.executable, str(worker), str(next(ports))]
        codes, outputs = _run_pair(command, env, tmp_path, args, timeout)
        if not (codes[0] != 0 and any(text in outputs[0] for text in _PORT_TAKEN)):
            break
    for code, out in zip(codes, outputs, strict=True):
        assert code == 0, out[-3000:]


def _run_pair(command, env, tmp_path, args, timeout) -> tuple[list[int], list[str]]:
    procs = [
        subprocess.Popen(
            [*command, str(pid), str(tmp_path), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in range(2)
    ]
    outputs = []
    try:
        # Process 0 first: it holds the coordinator, and when it fails to start it the
        # other one is killed below instead of waiting out its connection deadline.
        outputs.append(procs[0].communicate(timeout=timeout)[0])
        if procs[0].returncode != 0 and any(text in outputs[0] for text in _PORT_TAKEN):
            procs[1].kill()
        outputs.append(procs[1].communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return [proc.returncode for proc in procs], outputs

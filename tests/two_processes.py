"""Runs a worker script as two JAX processes on loopback (CPU collectives over gloo)."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys


def run_two_processes(worker: pathlib.Path, tmp_path: pathlib.Path, *args: str, timeout: int):
    """Starts ``worker PORT PID TMP_PATH *args`` for PID 0 and 1; fails with a worker's output.

    The workers get a clean JAX environment pinned to the CPU (also on an accelerator
    machine) and the repository on ``PYTHONPATH``; a hung worker is killed at ``timeout``.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(pathlib.Path(__file__).resolve().parents[1])
    command = [sys.executable, str(worker), str(port)]
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
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]

"""tests/two_processes.py: a coordinator port taken by someone else is retried, not a failure."""

from __future__ import annotations

import socket
import textwrap

import pytest

from tests.two_processes import _free_ports, run_two_processes

# Stands in for a JAX worker: process 0 binds the coordinator port (and says what JAX
# says when it cannot), process 1 waits for it, as JAX's client waits to connect; each
# records the port it ran on.
_FAKE_WORKER = textwrap.dedent(
    """
    import pathlib, socket, sys, time
    port, pid, tmp = int(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
    if pid == 0:
        try:
            socket.create_server(("127.0.0.1", port)).close()
        except OSError:
            print("jax.errors.JaxRuntimeError: UNKNOWN: Failed to start RPC server")
            sys.exit(1)
    else:
        deadline = time.monotonic() + 30
        while not (tmp / f"ran_0_{port}").exists():
            if time.monotonic() > deadline:
                sys.exit("no coordinator")
            time.sleep(0.01)
    (tmp / f"ran_{pid}_{port}").touch()
    """
)


@pytest.fixture
def taken_port():
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def _free_port() -> int:
    return next(_free_ports())


def test_a_taken_coordinator_port_is_retried_on_the_next_one(tmp_path, taken_port):
    worker = tmp_path / "worker.py"
    worker.write_text(_FAKE_WORKER)
    free = _free_port()
    run_two_processes(worker, tmp_path, timeout=60, ports=[taken_port, free])
    assert sorted(p.name for p in tmp_path.glob("ran_*")) == [f"ran_0_{free}", f"ran_1_{free}"]


def test_a_port_taken_every_time_fails_with_the_workers_output(tmp_path, taken_port):
    worker = tmp_path / "worker.py"
    worker.write_text(_FAKE_WORKER)
    with pytest.raises(AssertionError, match="Failed to start RPC server"):
        run_two_processes(worker, tmp_path, timeout=60, ports=[taken_port] * 3)


def test_any_other_failure_is_not_retried(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text("import sys; print('worker broke'); sys.exit(3)\n")
    with pytest.raises(AssertionError, match="worker broke"):
        run_two_processes(worker, tmp_path, timeout=60, ports=[_free_port()])  # one port only

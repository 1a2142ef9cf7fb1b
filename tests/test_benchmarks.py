"""The step-time benchmark's bookkeeping: every registry row declared, both floors reported.

No timing is asserted (timings depend on the machine and its load); these check the
table in ``benchmarks/rows.py`` against the registry, the own-floor arithmetic against
its closed form, and that a tiny run produces both ratio columns.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import allreduce_temp, candidates, measure, primitives, report, rows, step_time
from tests.registry import ALL_CASES


def test_every_registry_row_has_an_entry_with_a_declared_floor():
    rows.check_entries(case.name for case in ALL_CASES)
    for case in ALL_CASES:
        entry = rows.ENTRIES[case.name]
        assert "param" in entry.reads and "param" in entry.writes, case.name
        assert entry.floor.why.strip(), f"{case.name}: the floor must say how it is counted"
        arrays = len(entry.reads) + len(entry.writes) + entry.floor.extra_arrays
        assert arrays > 0, case.name
        assert entry.floor.payload_bits >= 0, case.name
        for name, count in entry.floor.uses:
            assert count >= 1, case.name
            assert min(primitives.traffic(name)) >= 0, case.name  # a known primitive


def test_a_row_without_an_entry_stops_the_benchmark():
    names = [case.name for case in ALL_CASES]
    entries = {k: v for k, v in rows.ENTRIES.items() if k != "sam_sgd"}
    with pytest.raises(LookupError, match=r"rows without an entry: \['sam_sgd'\]"):
        rows.check_entries(names, entries)
    with pytest.raises(LookupError, match=r"entries without a row: \['sam_sgd'\]"):
        rows.check_entries([n for n in names if n != "sam_sgd"])
    # Also when --only selects other rows: the run must not skip the row silently.
    new = dataclasses.replace(ALL_CASES[0], name="a_new_row")
    with pytest.raises(LookupError, match=r"rows without an entry: \['a_new_row'\]"):
        candidates.registry_candidates([*ALL_CASES, new], re.compile(r"^gdtx\.sign_sgd$"))


def test_own_floor_is_traffic_plus_payload_plus_the_rounds_primitives():
    n, bandwidth = 1000, 4e9
    floor = rows.Floor("test", extra_arrays=2, payload_bits=12.0, uses=(("grad", 3), ("loss", 1)))
    c = candidates.Candidate("x", "gdtx", 4, 3, build=None, floor=floor)
    times = {"x": [1.0, 2.0, 3.0], "primitive: grad": [0.1, 0.2, 0.3], "primitive: loss": [1, 1, 1]}
    got = measure.own_floor(c, times, n, bandwidth)
    # (4 + 3 + 2) float32 arrays, and 12 bits per element written once and read once.
    traffic = ((4 + 3 + 2) * 4 + 2 * 12 / 8) * n / bandwidth
    want = traffic + 3 * np.array([0.1, 0.2, 0.3]) + 1.0
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # A primitive not measured in every round leaves the own floor undefined.
    assert measure.own_floor(c, {**times, "primitive: loss": [1, 1]}, n, bandwidth) is None


def test_copies_column_counts_leaf_sized_copies_only():
    # A donated leaf returned next to its own update is copied (a pass over memory);
    # a donated key returned next to its successor is copied too, but that is four
    # words of bookkeeping and must not make a row look like it copies state.
    leaf, key = jnp.zeros(4096), jnp.zeros(4, jnp.uint32)
    step = jax.jit(lambda p, k: (p + 1.0, p, k + 1, k), donate_argnums=(0, 1))
    compiled = step.lower(leaf, key).compile()
    assert candidates.hlo_stats(compiled)["copies"] == 2  # every array copy
    assert candidates.hlo_stats(compiled, leaf.size)["copies"] == 1
    assert candidates.hlo_stats(compiled, leaf.size + 1)["copies"] == 0


def test_a_tiny_run_reports_both_floors(tmp_path):
    out = tmp_path / "step_time.md"
    results = step_time.main(
        [
            "--sizes=2e3",
            "--layouts=single",
            "--rounds=1",
            "--no-torch",
            r"--only=^gdtx\.(sam_sgd|mfac)$",
            f"--markdown={out}",
        ]
    )
    (block,) = results["blocks"]
    by_name = {r["name"]: r for r in block["rows"]}
    assert {"gdtx.sam_sgd", "gdtx.mfac", "primitive: grad", "primitive: window4"} <= set(by_name)
    assert "gdtx.adabelief" not in by_name  # the filter held
    for name in ("gdtx.sam_sgd", "gdtx.mfac", "optax.adam"):
        row = by_name[name]
        assert math.isfinite(row["x_floor"]) and row["x_floor"] > 0, name
        assert math.isfinite(row["x_own_floor"]) and row["x_own_floor"] > 0, name
    # SAM's own floor holds its extra gradient: it exceeds its generic floor.
    sam = by_name["gdtx.sam_sgd"]
    assert sam["own_floor_ms"] > sam["floor_ms"] + by_name["primitive: grad"]["median_ms"] * 0.99
    lines = out.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| candidate"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    sam_line = next(line for line in lines if line.startswith("| gdtx.sam_sgd |"))
    sam_cells = [c.strip() for c in sam_line.strip("|").split("|")]
    for column in ("× generic floor", "× own floor"):
        float(sam_cells[cells.index(column)])  # a number, not a dash


def test_the_docs_floor_table_is_what_floors_prints():
    # docs/benchmarks.md shows every row's declared floor; a floor changed in
    # benchmarks/rows.py without the table (mfl_sgd's and diloco_adam's all-reduces
    # were missing from it) would describe a floor the benchmark no longer uses.
    docs = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    printed = [line for line in report.floors_markdown().splitlines() if line.startswith("|")]
    lines = docs.splitlines()
    start = lines.index(printed[0])
    assert lines[start : start + len(printed)] == printed


def test_on_an_accelerator_a_device_buffer_is_rewritten_before_each_timing():
    # The host flush cannot evict a GPU's L2; the device flush rewrites a buffer larger
    # than it. On "cpu" it does nothing (the host flush is the cache flush there).
    assert measure.device_flush("cpu")() is None
    flush = measure.device_flush("gpu")  # the accelerator path, run on this machine's device
    flush()
    flush()  # the donated buffer is carried from call to call
    assert measure.DEVICE_FLUSH_BYTES >= 2 * 60 * 1024 * 1024  # H200's L2 is 60 MB


def test_the_allreduce_diagnostic_runs_its_three_variants():
    result = allreduce_temp.main(["--size=2e3", "--leaves=4", "--rounds=1"])
    assert set(result) == set(allreduce_temp.VARIANTS)
    assert all(math.isfinite(r["median_ms"]) and r["median_ms"] > 0 for r in result.values())
    # Without the average nothing outlives the loops: the step writes in place.
    assert result["no collective"]["temp_mb"] == 0

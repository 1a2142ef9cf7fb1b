"""The registry row: everything the battery needs to know about one alias."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import optax

import gdtx

# The battery's checks of how a row plugs into JAX and optax (compiled and retraced,
# donated, injected, traced and scheduled hyperparameters, unknown keywords, MultiSteps,
# scanned under shard_map, FSDP-sharded), as opposed to its arithmetic and its validation.
PLUMBING_CHECKS = (
    "test_no_retrace_on_second_call",
    "test_unexpected_extra_args_are_ignored",
    "test_inject_hyperparams_gives_the_same_updates",
    "test_traced_hyperparameters_are_accepted",
    "test_learning_rate_and_weight_decay_may_be_schedules",
    "test_multisteps_first_update_is_zero",
    "test_donated_step_runs",
    "test_collective_state_initialised_inside_shard_map_can_be_scanned",
    "test_state_sharding_follows_params",
)


def same_plumbing_as(row: str) -> dict[str, str]:
    """``slow_tier_checks`` for a row built by ``row``'s factory with other options.

    The factory's plumbing is the same code for both rows, and ``row`` runs it through
    every plumbing check in the default suite; this row runs those checks in the slow
    tier (each costs a compile per row). Its arithmetic (convergence, dtypes, complex
    numbers) and its validation stay in the default suite.
    ``tests/test_battery_harness.py`` checks that both rows have the same factory.
    """
    return {check: f"same factory as {row}, other options" for check in PLUMBING_CHECKS}


@dataclasses.dataclass(frozen=True)
class Case:
    """One optimizer alias under test.

    Attributes:
      name: the test id.
      factory: the public alias, e.g. ``gdtx.adabelief``.
      kwargs: hyperparameters with which it converges on the battery problems.
      rosenbrock_kwargs: overrides for Rosenbrock (e.g. a schedule), or None to
        skip Rosenbrock with ``rosenbrock_skip`` as the reason.
      rosenbrock_skip: why Rosenbrock is skipped (documented limitation).
      complex_rosenbrock_skip: why only the complex Rosenbrock is skipped, for a
        row that supports complex numbers and solves the real Rosenbrock.
      static_args: arguments ``optax.inject_hyperparams`` must not trace
        (booleans, strings, integers that fix shapes).
      required_extra_args: what ``gdtx.required_extra_args`` must report.
      extra_args: builds the extra arguments for ``update`` from ``(loss, params, grads)``,
        where ``loss(params) -> scalar`` is the battery problem being solved.
      dtype_knobs: knob name -> names of the state fields it sets.
      supports_complex: whether the complex parabola must converge too.
      axis_name: the named mesh axis the update needs, if any (run under a
        one-device ``shard_map``).
      invalid: ``(kwargs override, regex)`` pairs that must raise ``ValueError``
        (or ``TypeError``, for a value of the wrong type).
      owner: the public gdtx name that the row's error messages must name. None:
        ``gdtx.<factory name>`` when the factory is a public gdtx function; for a
        test-local wrapper, any public gdtx name (it forwards to several).
      unvalidated_args: argument -> why the battery does not type-check it: only
        for arguments a test-local wrapper hands to optax, which does not
        validate (e.g. ``{"learning_rate": "forwarded to optax.sgd"}``).
      slow_tier_checks: battery check (test function name) -> why it runs for this
        row in the slow tier only: another row drives the same code through it, and
        the check costs the default suite many seconds of compiling
        (``tests/conftest.py`` marks those items ``slow``).
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    kwargs: Mapping[str, Any]
    rosenbrock_kwargs: Mapping[str, Any] | None = dataclasses.field(default_factory=dict)
    rosenbrock_skip: str = ""
    complex_rosenbrock_skip: str = ""
    static_args: tuple[str, ...] = ()
    required_extra_args: frozenset[str] = frozenset()
    extra_args: Callable[[Any, Any, Any], Mapping[str, Any]] = lambda loss, params, grads: {}
    dtype_knobs: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    supports_complex: bool = False
    axis_name: str | None = None
    invalid: tuple[tuple[Mapping[str, Any], str], ...] = ()
    owner: str | None = None
    unvalidated_args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    slow_tier_checks: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def make(self, **overrides: Any) -> optax.GradientTransformation:
        return self.factory(**{**self.kwargs, **overrides})

    @property
    def owner_pattern(self) -> str:
        """A regex for the public name the row's messages must name."""
        if self.owner is not None:
            return re.escape(self.owner) + r"\b"
        name = getattr(self.factory, "__name__", "")
        if getattr(gdtx, name, None) is self.factory:
            return re.escape(f"gdtx.{name}") + r"\b"
        return r"gdtx\.(" + "|".join(sorted(gdtx.__all__, key=len, reverse=True)) + r")\b"

    def __str__(self) -> str:
        return self.name

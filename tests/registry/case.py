"""The registry row: everything the battery needs to know about one alias."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import optax


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
      static_args: arguments ``optax.inject_hyperparams`` must not trace
        (booleans, strings, integers that fix shapes).
      required_extra_args: what ``gdtx.required_extra_args`` must report.
      extra_args: builds the extra arguments for ``update`` from ``(loss, params, grads)``,
        where ``loss(params) -> scalar`` is the battery problem being solved.
      dtype_knobs: knob name -> names of the state fields it sets.
      supports_complex: whether the complex parabola must converge too.
      axis_name: the named mesh axis the update needs, if any (run under a
        one-device ``shard_map``).
      reads / writes: the arrays a step reads and writes per parameter element
        (for the benchmark's bandwidth floor).
      invalid: ``(kwargs override, regex)`` pairs that must raise ``ValueError``.
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    kwargs: Mapping[str, Any]
    rosenbrock_kwargs: Mapping[str, Any] | None = dataclasses.field(default_factory=dict)
    rosenbrock_skip: str = ""
    static_args: tuple[str, ...] = ()
    required_extra_args: frozenset[str] = frozenset()
    extra_args: Callable[[Any, Any, Any], Mapping[str, Any]] = lambda loss, params, grads: {}
    dtype_knobs: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    supports_complex: bool = False
    axis_name: str | None = None
    reads: tuple[str, ...] = ("grad", "param")
    writes: tuple[str, ...] = ("param",)
    invalid: tuple[tuple[Mapping[str, Any], str], ...] = ()

    def make(self, **overrides: Any) -> optax.GradientTransformation:
        return self.factory(**{**self.kwargs, **overrides})

    def __str__(self) -> str:
        return self.name

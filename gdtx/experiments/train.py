"""Trains one model per configured optimizer on a task and compares them.

Every optimizer starts from the same initial parameters (same seed) and sees
the same batches in the same order, so the curves differ only because of the
optimizer. The comparison is written to ``workdir``:

* ``results.json``: per optimizer the final/best metrics, wall time, steps/s
  and the raw curves; plus the config and the library versions.
* ``curves.png``: loss (and accuracy, where the task has one) against steps,
  one colour per optimizer.
* ``summary.md``: the Markdown summary table, also printed to stdout.
* ``config.json``: the resolved config (overrides applied), written before
  training starts (kept as it is when the workdir's checkpoints belong to
  another config, whose resumption then fails).
* Per optimizer in ``results.json`` also ``grad_norms`` (the norm of the raw
  minibatch gradient at every step 1..num_steps, ``grad_norm_kind`` "l2" or
  "l1": ``config.grad_norm``, "auto" = "l1" for Adam-type optimizers) and
  ``update_norms`` (the l2 norm of every applied update; for plain SGD
  ``update_norms / grad_norms`` is the learning rate applied). A later run with
  ``--config.refine_from=<this workdir>`` trains with the refined schedule
  ``gdtx.refined`` of these norms (Defazio et al.).
* ``checkpoints/<optimizer>/<step>/``: Orbax checkpoints every
  ``config.checkpoint_every`` steps (0 disables them) holding the parameters,
  the optimizer state, the JAX key, the data sampler's state (data order and
  NumPy RNG) and the curves so far. Running again with the same ``workdir``
  resumes each optimizer from its latest checkpoint and produces results
  identical to an uninterrupted run, timings aside.

Data-parallel runs: with ``config.data_parallel_devices = N`` (and
``config.mesh_axis``, default ``"data"``) every optimizer trains through
:func:`gdtx.data_parallel_step` on a 1-D mesh of ``N`` devices, the global batch
split ``N`` ways. Factories that take an ``axis_name`` get the mesh axis, and an
entry's ``aggregate`` (e.g. ``gdtx.compressed_mean`` of a compressor) is chained
before its optimizer. ``results.json`` then also holds per optimizer the bytes
each device sent per step (``bytes_sent_per_step``, ``payload_bytes_per_step``,
``hlo_operand_bytes_per_step`` read from the compiled step, ``hlo_collectives``)
and the curve ``cumulative_bytes_sent``; there are no gradient norms (each device
has its own gradient) and no checkpoints (``checkpoint_every`` must be 0).
``configs/char_lm_dp.py`` is the example.

The training step is functional: parameters are a plain dict (the model's
``nnx.Param`` state as ``to_pure_dict()``), the optimizer state is whatever
``tx.init`` returns, and the optimizer state is restored against
``jax.eval_shape(tx.init, params)`` so that it comes back as the same
NamedTuples (see ``gdtx.checkpoint``).
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from flax import nnx

import gdtx
from gdtx import checkpoint
from gdtx.experiments import tasks

Factory = Callable[..., optax.GradientTransformation]

# Off a terminal (a log file, a CI console) every redraw of a progress bar is one more
# carriage-return segment on a single endless line: there a bar is drawn when it starts,
# at most every 30 s, and when it ends. Jupyter, whose stderr is not a terminal either,
# renders redraws in place and keeps tqdm's default.
_LOG_REFRESH_S = 30.0


def _refreshes_in_place(stream: Any) -> bool:
    """Whether ``stream`` shows a redrawn bar in place (a terminal, or a Jupyter kernel)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty()) or "ipykernel" in sys.modules


def _momentum(learning_rate, **kwargs):
    return optax.sgd(learning_rate, momentum=kwargs.pop("momentum", 0.9), **kwargs)


# The optimizers that a config can name with a bare name. Each entry is called
# as ``factory(learning_rate, **kwargs)``. Any other public optimizer is
# reachable as "gdtx.<name>" or "optax.<name>".
OPTIMIZERS: dict[str, Factory] = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "sgd": optax.sgd,
    "momentum": _momentum,
    "adabelief": gdtx.adabelief,
}


def _resolve(name: str) -> Factory:
    if name in OPTIMIZERS:
        return OPTIMIZERS[name]
    module, _, attr = name.partition(".")
    if module in ("gdtx", "optax") and attr and not attr.startswith("_"):
        factory = getattr(gdtx if module == "gdtx" else optax, attr, None)
        if callable(factory):
            return factory
    raise ValueError(
        f"Unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}, "
        "or 'gdtx.<alias>' / 'optax.<alias>'."
    )


def _with_axis(factory: Callable, kwargs: dict[str, Any], axis_name: str | None) -> dict:
    """``kwargs`` plus ``axis_name`` when ``factory`` takes one and the config left it out."""
    if axis_name is not None and "axis_name" not in kwargs:
        if "axis_name" in inspect.signature(factory).parameters:
            kwargs["axis_name"] = axis_name
    return kwargs


def build_component(spec: dict[str, Any], axis_name: str | None = None) -> Any:
    """``factory(**kwargs)`` for a ``{"name": ..., "kwargs": {...}}`` dict (no learning rate).

    Used for the parts of an optimizer that a config names: a compressor
    (``{"name": "gdtx.qsgd", "kwargs": {"num_levels": 16}}``) or a collective
    aggregation (``{"name": "gdtx.compressed_mean", "kwargs": {"compressor":
    {...}}}``). Nested dicts with a ``name`` are built the same way; a factory
    that takes ``axis_name`` gets ``axis_name`` unless the dict sets it.
    """
    spec = dict(spec)
    factory = _resolve(spec["name"])
    kwargs = {
        k: build_component(v, axis_name) if isinstance(v, dict) and "name" in v else v
        for k, v in dict(spec.get("kwargs") or {}).items()
    }
    return factory(**_with_axis(factory, kwargs, axis_name))


def make_optimizer(
    name: str,
    learning_rate: float,
    kwargs: dict[str, Any] | None = None,
    schedule: Callable[[float], optax.Schedule] | None = None,
    *,
    axis_name: str | None = None,
) -> optax.GradientTransformation:
    """Builds ``name`` (a key of ``OPTIMIZERS``, or ``gdtx.X`` / ``optax.X``).

    A wrapper whose first argument is ``inner`` (``gdtx.sam``, ``gdtx.salr``)
    takes the wrapped optimizer from ``kwargs["inner"]``, itself a dict with a
    ``name``, an optional ``learning_rate`` (default: this one) and optional
    ``kwargs``; e.g. ``{"name": "gdtx.sam", "learning_rate": 0.1, "kwargs":
    {"rho": 0.05, "inner": {"name": "sgd"}}}``.

    ``schedule``, if given, maps the (peak) learning rate to an optax schedule
    that is passed instead of it; for a wrapper it applies to the inner optimizer.

    ``axis_name`` (data-parallel runs: the mesh axis) is passed to every factory
    that takes an ``axis_name`` (``gdtx.signum_vote``, ...) and is not given one
    in ``kwargs``. Other ``kwargs`` values that are dicts with a ``name`` are
    built with :func:`build_component` (e.g. a compressor).
    """
    factory = _resolve(name)
    kwargs = {
        k: build_component(v, axis_name)
        if k != "inner" and isinstance(v, dict) and "name" in v
        else v
        for k, v in dict(kwargs or {}).items()
    }
    params = list(inspect.signature(factory).parameters)
    if params[:1] == ["inner"]:
        if "inner" not in kwargs:
            raise ValueError(f"Optimizer {name!r} wraps another: give kwargs.inner.")
        inner = dict(kwargs.pop("inner"))
        return factory(
            make_optimizer(
                inner["name"],
                inner.get("learning_rate", learning_rate),
                inner.get("kwargs"),
                schedule,
                axis_name=axis_name,
            ),
            **_with_axis(factory, kwargs, axis_name),
        )
    lr = learning_rate if schedule is None else schedule(learning_rate)
    return factory(lr, **_with_axis(factory, kwargs, axis_name))


# Extra arguments the training step can hand to ``tx.update`` when an
# optimizer declares them (``gdtx.required_extra_args``).
SUPPLIED_EXTRA_ARGS = frozenset(
    {"value", "value_fn", "grad_fn", "per_example_value_fn", "grad_variance"}
)


def _optimizer_kwargs(opt_config: ml_collections.ConfigDict) -> dict[str, Any]:
    kwargs = opt_config.get("kwargs", None)
    if kwargs is None:
        return {}
    return kwargs.to_dict() if isinstance(kwargs, ml_collections.ConfigDict) else dict(kwargs)


# What `gdtx.data_parallel_step` hands to `tx.update` (data-parallel runs).
DATA_PARALLEL_EXTRA_ARGS = frozenset({"value", "value_fn", "grad_fn"})


def build_optimizer(
    opt_config: ml_collections.ConfigDict,
    schedule: Callable[[float], optax.Schedule] | None = None,
    *,
    axis_name: str | None = None,
) -> optax.GradientTransformation:
    """The optimizer of one ``config.optimizers`` entry; fails on unsupplied extra args.

    ``schedule`` (see :func:`make_optimizer`) turns its learning rate into a schedule.
    ``axis_name`` (the mesh axis of a data-parallel run) goes to every factory
    that takes one. An entry's ``aggregate`` (a :func:`build_component` dict,
    e.g. ``{"name": "gdtx.compressed_mean", "kwargs": {"compressor": {"name":
    "gdtx.qsgd", "kwargs": {"num_levels": 16}}}}``) is chained before the
    optimizer: it turns the devices' gradients into one.
    """
    tx = make_optimizer(
        opt_config.name,
        opt_config.learning_rate,
        _optimizer_kwargs(opt_config),
        schedule,
        axis_name=axis_name,
    )
    aggregate = opt_config.get("aggregate", None)
    if aggregate is not None:
        if isinstance(aggregate, ml_collections.ConfigDict):
            aggregate = aggregate.to_dict()
        tx = gdtx.chain(build_component(aggregate, axis_name), tx)
    supplied = SUPPLIED_EXTRA_ARGS if axis_name is None else DATA_PARALLEL_EXTRA_ARGS
    missing = gdtx.required_extra_args(tx) - supplied
    if missing:
        raise ValueError(
            f"Optimizer {opt_config.name!r} requires extra arguments {sorted(missing)} that "
            f"the training loop does not supply (it supplies {sorted(supplied)})."
        )
    return tx


# Adam-type (coordinate-wise adaptive) optimizers: their refinement uses l1 norms
# (Defazio et al., Algorithm 2); everything else (SGD, momentum, sign methods) l2.
_ADAPTIVE = (
    *("adam", "adabelief", "adagrad", "adafactor", "diffgrad", "msvag", "rmsprop"),
    *("lamb", "yogi", "novograd", "amsgrad", "sophia", "adan", "adadelta"),
)


def _base_names(opt_config) -> list[str]:
    """The optimizer's name and, for a wrapper, the wrapped optimizer's (innermost last)."""
    names = [opt_config.name]
    inner = _optimizer_kwargs(opt_config).get("inner")
    while inner is not None:
        inner = dict(inner)
        names.append(inner["name"])
        inner = dict(inner.get("kwargs") or {}).get("inner")
    return [n.rpartition(".")[2].lower() for n in names]


def grad_norm_kind(config: ml_collections.ConfigDict, opt_config) -> str:
    """Which gradient norm a run records: ``"l2"`` (SGD-type) or ``"l1"`` (Adam-type).

    The optimizer entry's ``grad_norm``, else ``config.grad_norm``; ``"auto"``
    (the default) picks ``"l1"`` when the optimizer (or the one a wrapper such as
    ``gdtx.sam`` wraps) is Adam-type, ``"l2"`` otherwise.
    """
    kind = opt_config.get("grad_norm", None) or config.get("grad_norm", "auto")
    if kind == "auto":
        inner = _base_names(opt_config)[-1]
        return "l1" if any(a in inner for a in _ADAPTIVE) else "l2"
    if kind not in ("l1", "l2"):
        raise ValueError(f"--config.grad_norm must be 'auto', 'l1' or 'l2', got {kind!r}.")
    return kind


def training_optimizer(
    config: ml_collections.ConfigDict,
    opt_config,
    schedule: Callable[[float], optax.Schedule] | None = None,
) -> optax.GradientTransformation:
    """``build_optimizer`` between two norm recorders, as ``train_and_evaluate`` trains it.

    ``gdtx.chain(record_grad_norm(kind), tx, record_grad_norm("l2"))``: the
    first records the norm of the raw gradient (for refinement), the last the
    l2 norm of the update that is applied. ``gdtx.chain`` keeps the extra
    arguments that ``tx`` declares (``grad_fn`` of SAM, ...). The state is the
    tuple ``(RecordGradNormState, state of tx, RecordGradNormState)``.

    In a data-parallel run (``config.data_parallel_devices``) it is
    ``build_optimizer`` with the mesh axis alone: a collective's raw gradient
    differs per device, so there is no one gradient norm to record there (the
    step's metrics give the update norm instead).
    """
    axis = data_parallel_axis(config)
    if axis is not None:
        return build_optimizer(opt_config, schedule, axis_name=axis)
    tx = build_optimizer(opt_config, schedule)
    return gdtx.chain(
        gdtx.record_grad_norm(grad_norm_kind(config, opt_config)), tx, gdtx.record_grad_norm("l2")
    )


def data_parallel_axis(config: ml_collections.ConfigDict) -> str | None:
    """The mesh axis of a data-parallel run (``config.mesh_axis``), None for one device."""
    if not config.get("data_parallel_devices", 0):
        return None
    return config.get("mesh_axis", "data")


def sync_every(opt_config) -> int:
    """Steps between two exchanges of a local-SGD entry (``periodic_average``, ``diloco``), else 1.

    Such an optimizer exchanges only when its step count is a multiple of
    ``every``, yet its declared exchange (the step's ``bytes_sent``) is that of a
    synchronising step: the loop counts those bytes on synchronising steps only.
    """
    from gdtx import local_sgd

    factory = _resolve(opt_config.name)
    if factory not in (local_sgd.periodic_average, local_sgd.diloco):
        return 1
    every = _optimizer_kwargs(opt_config).get("every")
    if every is None:
        every = inspect.signature(factory).parameters["every"].default
    return int(every)


def data_parallel_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """The 1-D mesh of ``config.data_parallel_devices`` devices along ``config.mesh_axis``.

    Fails, naming the fix, when JAX has fewer devices (``gdtx-train`` asks for
    simulated CPU devices before JAX starts; a program must do it itself).
    """
    n = config.data_parallel_devices
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(
            f"--config.data_parallel_devices must be an integer >= 1 (0: one device, no "
            f"data parallelism), got {n!r}."
        )
    if config.batch_size % n:
        raise ValueError(
            f"--config.batch_size={config.batch_size} is not divisible by "
            f"--config.data_parallel_devices={n}: each device takes batch_size / "
            f"{n} examples. Use a batch size that is a multiple of {n}."
        )
    if config.get("checkpoint_every", 0) or config.get("refine_from", ""):
        raise ValueError(
            "--config.data_parallel_devices: checkpoints and --config.refine_from are not "
            "supported in data-parallel runs yet; set --config.checkpoint_every=0 and leave "
            "refine_from empty."
        )
    devices = jax.devices()
    if len(devices) < n:
        raise ValueError(
            f"--config.data_parallel_devices={n} but JAX has {len(devices)} device(s) "
            f"({jax.default_backend()}). gdtx-train simulates CPU devices when it starts; in "
            f"your own program call jax.config.update('jax_num_cpu_devices', {n}) (or set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n}) before JAX is first used; "
            f"on a GPU or TPU host with fewer devices, add JAX_PLATFORMS=cpu to simulate them, "
            f"or lower --config.data_parallel_devices."
        )
    return jax.sharding.Mesh(np.array(devices[:n]), (data_parallel_axis(config),))


def _norms_of(opt_state) -> tuple[jax.Array, jax.Array]:
    """The (gradient norm, update norm) of the last step of a ``training_optimizer`` state."""
    return opt_state[0].grad_norm, opt_state[-1].grad_norm


def refinement_sources(config: ml_collections.ConfigDict, labels: list[str]) -> list[Any]:
    """Per optimizer, ``(grad_norms, kind)`` from ``config.refine_from``'s results (or None).

    The previous run's entry is the one with the same label, else the only one
    with the same optimizer name. Errors name ``--config.refine_from``.
    """
    run_dir = config.get("refine_from", "")
    if not run_dir:
        return [None] * len(labels)
    flag = f"--config.refine_from={run_dir}"
    path = os.path.join(run_dir, "results.json")
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{flag}: no such run directory.")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{flag}: {path} does not exist; point it at the workdir of a finished gdtx-train run."
        )
    with open(path) as f:
        previous = json.load(f).get("optimizers", {})
    sources = []
    for label, opt_config in zip(labels, config.optimizers, strict=True):
        entry = previous.get(label)
        if entry is None:
            same_name = [e for e in previous.values() if e.get("name") == opt_config.name]
            entry = same_name[0] if len(same_name) == 1 else None
        if entry is None:
            raise ValueError(
                f"{flag}: {path} has no optimizer {label!r} (nor exactly one named "
                f"{opt_config.name!r}); it has {sorted(previous)}."
            )
        norms = entry.get("grad_norms")
        if not norms:
            raise ValueError(
                f"{flag}: the entry {label!r} of {path} has no recorded `grad_norms` "
                "(written by gdtx-train since issue 19); rerun it to record them."
            )
        kind = entry.get("grad_norm_kind", "l2")
        if kind != grad_norm_kind(config, opt_config):
            raise ValueError(
                f"{flag}: {label!r} recorded {kind} norms but this run's optimizer records "
                f"{grad_norm_kind(config, opt_config)}; set --config.grad_norm={kind}."
            )
        sources.append((norms, kind))
    return sources


def _refined_schedule(config, source) -> Callable[[float], optax.Schedule] | None:
    if source is None:
        return None
    norms, kind = source
    smoothing = config.get("refine_smoothing", 0.1)
    return lambda peak: gdtx.refined(
        norms, total_steps=config.num_steps, smoothing=smoothing, norm=kind, peak=peak
    )


def eval_steps(num_steps: int, eval_every: int) -> list[int]:
    """The steps at which the model is evaluated: 0, every ``eval_every``, last."""
    if num_steps < 1 or eval_every < 1:
        raise ValueError(f"num_steps and eval_every must be >= 1, got {num_steps}, {eval_every}.")
    return sorted(set(range(0, num_steps + 1, eval_every)) | {num_steps})


def _labels(optimizer_configs) -> list[str]:
    """A unique display name per optimizer: ``label``, else its name (+ lr if repeated)."""
    names = [c.name for c in optimizer_configs]
    labels = [
        c.get("label", None)
        or (f"{c.name} (lr={c.learning_rate:g})" if names.count(c.name) > 1 else c.name)
        for c in optimizer_configs
    ]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"Optimizer labels must be unique; repeated: {duplicates}. Set `label`.")
    return labels


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")


def _make_functions(task: tasks.Task, graphdef: Any, tx: optax.GradientTransformation):
    """The jitted train step of one optimizer."""
    required = gdtx.required_extra_args(tx)

    def per_example(params, batch, key, deterministic):
        model = nnx.merge(graphdef, params)
        rngs = None if deterministic else nnx.Rngs(dropout=key)
        return task.per_example(model, batch, deterministic, rngs)

    def mean_loss(params, batch, key):
        losses, _ = per_example(params, batch, key, False)
        return losses.mean()

    @jax.jit
    def train_step(params, opt_state, key, batch):
        key, step_key = jax.random.split(key)
        loss, grads = jax.value_and_grad(mean_loss)(params, batch, step_key)
        extra: dict[str, Any] = {}
        # Everything an optimizer evaluates sees the same batch and dropout mask.
        if "value" in required:
            extra["value"] = loss
        if "value_fn" in required:
            extra["value_fn"] = lambda p: mean_loss(p, batch, step_key)
        if "grad_fn" in required:
            extra["grad_fn"] = jax.grad(lambda p: mean_loss(p, batch, step_key))
        if "per_example_value_fn" in required:
            extra["per_example_value_fn"] = lambda p: per_example(p, batch, step_key, False)[0]
        if "grad_variance" in required:

            def one(p, example):
                single = jax.tree.map(lambda x: x[None], example)
                return per_example(p, single, step_key, False)[0][0]

            per_example_grads = jax.vmap(jax.grad(one), in_axes=(None, 0))(params, batch)
            _, extra["grad_variance"] = gdtx.batch_mean_and_variance(per_example_grads)
        updates, opt_state = tx.update(grads, opt_state, params, **extra)
        params = optax.apply_updates(params, updates)
        return params, opt_state, key, loss

    return train_step


class DataParallelTrainStep:
    """``train_step`` of a data-parallel run, built with :func:`gdtx.data_parallel_step`.

    Called like the single-device step, ``(params, opt_state, key, batch) ->
    (params, opt_state, key, loss, metrics)``; ``metrics`` are the step's own
    (``loss``, ``update_norm``, ``bytes_sent``, ``payload_bytes``). The global
    batch is split along the mesh axis; device ``k`` draws its dropout mask from
    the step key folded with ``k``, so the devices' masks differ as they would on
    separate machines. ``init`` places the optimizer state on the mesh.

    ``every`` (:func:`sync_every`) is the period of a local-SGD optimizer, whose
    parameters come back per device (a leading axis of ``N``):
    :meth:`model_params` gives the model to evaluate (their mean) and
    :meth:`bytes_of_step` counts its exchange on synchronising steps only.
    :meth:`hlo_collectives` reads what the compiled step's collectives move
    (``gdtx.hlo_collectives``).
    """

    def __init__(self, task, graphdef, tx, mesh: jax.sharding.Mesh, axis: str, every: int = 1):
        def loss_fn(params, batch, key):
            key = jax.random.fold_in(key, jax.lax.axis_index(axis))
            model = nnx.merge(graphdef, params)
            losses, _ = task.per_example(model, batch, False, nnx.Rngs(dropout=key))
            return losses.mean()

        self.num_devices = mesh.shape[axis]
        self.every = every
        # No donation: the loop keeps the first step's inputs to compile the step
        # again for its HLO, and the evaluation reads the parameters afterwards.
        self.dp = gdtx.data_parallel_step(loss_fn, tx, mesh, axis=axis, donate=False)
        self.init = self.dp.init
        self._split = jax.jit(jax.random.split)
        self._mean = jax.jit(lambda p: jax.tree.map(lambda x: x.mean(axis=0), p))

    def __call__(self, params, opt_state, key, batch):
        key, step_key = self._split(key)
        params, opt_state, metrics = self.dp.step(params, opt_state, batch, step_key)
        return params, opt_state, key, metrics["loss"], metrics

    def bytes_of_step(self, step: int, metrics: dict[str, Any]) -> tuple[float, int]:
        """``(bytes_sent, payload_bytes)`` of step ``step`` (1-based) for each device."""
        if self.every > 1 and step % self.every:
            return 0.0, 0  # A local step: the exchange's branch did not run.
        return metrics["bytes_sent"], metrics["payload_bytes"]

    def model_params(self, params, initial):
        """The parameters to evaluate: per-device ones (leading axis N) averaged."""
        stacked = jax.tree.map(
            lambda x, x0: np.shape(x) == (self.num_devices, *np.shape(x0)), params, initial
        )
        if all(jax.tree.leaves(stacked)):
            return self._mean(params)
        return params

    def hlo_collectives(self, params, opt_state, key, batch) -> list:
        """The collectives of the compiled step (``gdtx.Collective`` each)."""
        from gdtx._core.hlo import hlo_collectives

        _, step_key = self._split(key)
        hlo = self.dp.step.lower(params, opt_state, batch, step_key).compile().as_text()
        return hlo_collectives(hlo)


def _make_train_step(
    config, task: tasks.Task, graphdef: Any, tx: optax.GradientTransformation, opt_config=None
):
    """The single-device step, or a :class:`DataParallelTrainStep` when the config asks."""
    axis = data_parallel_axis(config)
    if axis is None:
        return _make_functions(task, graphdef, tx)
    every = 1 if opt_config is None else sync_every(opt_config)
    return DataParallelTrainStep(task, graphdef, tx, data_parallel_mesh(config), axis, every)


def _make_evaluate(task: tasks.Task, graphdef: Any):
    """Mean loss and accuracy on a whole batch (compiled once for all optimizers)."""

    @jax.jit
    def evaluate(params, batch):
        model = nnx.merge(graphdef, params)
        losses, correct = task.per_example(model, batch, True, None)
        accuracy = jnp.float32(jnp.nan) if correct is None else correct.mean()
        return losses.mean(), accuracy

    return evaluate


class CompiledRuns:
    """The task and compiled functions of the latest config, reused by the next run of it.

    Pass one object to several :func:`train_and_evaluate` calls in one process (a
    resumed run, a notebook cell run again, tests) and a call whose config
    equals the previous call's reuses its task and compiled steps; another
    config replaces them. Without one, every call builds and compiles its own.
    """

    def __init__(self) -> None:
        self._key: str | None = None
        self._entry: dict[str, Any] | None = None

    def get(self, key: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The entry for ``key``: the cached one, or ``build()`` (which then replaces it)."""
        if self._key != key or self._entry is None:
            self._key, self._entry = key, build()
        return self._entry


def _checkpoint_manager(config, workdir: str, label: str):
    import orbax.checkpoint as ocp

    every = config.get("checkpoint_every", 0)
    if not every:
        return None
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints", _slug(label)),
        options=ocp.CheckpointManagerOptions(
            save_interval_steps=every, max_to_keep=config.get("checkpoints_to_keep", 2)
        ),
    )


def _comparable(config_json: dict[str, Any]) -> dict[str, Any]:
    """The config without the fields that may change between a run and its resumption."""
    return {k: v for k, v in config_json.items() if k not in ("progress_bar",)}


def train_one(
    config: ml_collections.ConfigDict,
    label: str,
    tx: optax.GradientTransformation,
    task: tasks.Task,
    workdir: str,
    stop_after: int | None = None,
    evaluate: Callable[[Any, Any], tuple[jax.Array, jax.Array]] | None = None,
    train_step: Callable[..., Any] | None = None,
) -> dict[str, Any] | None:
    """Trains a freshly initialised (or resumed) model with ``tx``; returns metrics & curves.

    ``stop_after`` stops after that step without returning metrics, as a
    preemption would (tests use it to check resumption). ``evaluate`` (see
    ``_make_evaluate``) and ``train_step`` (``_make_functions``) may be passed in
    to reuse compiled functions.
    """
    run = _Run(config, label, tx, task, workdir, evaluate, train_step)
    run.resume()
    last = config.num_steps if stop_after is None else min(stop_after, config.num_steps)
    run.train(last)
    run.close()
    if last < config.num_steps:
        return None
    return run.results()


class _Run:
    """One optimizer's training run: its parameters, state, data order, curves and checkpoints.

    Everything that a checkpoint must restore for a resumed run to equal an
    uninterrupted one lives here (``params``, ``opt_state``, ``key``, the
    sampler, ``curves``, ``step_log``); :func:`train_one` drives it.
    """

    def __init__(self, config, label, tx, task, workdir, evaluate, train_step):
        self.start = time.perf_counter()
        self.config, self.label, self.tx, self.task = config, label, tx, task
        # The same seed for every optimizer: identical initial parameters.
        graphdef, state = nnx.split(task.make_model(nnx.Rngs(config.seed)), nnx.Param)
        self.params = self.initial_params = nnx.to_pure_dict(state)
        self.key = jax.random.key_data(jax.random.key(config.seed))
        self.sampler = task.make_sampler()
        if train_step is None:
            train_step = _make_train_step(config, task, graphdef, tx)
        self.train_step = train_step
        self.evaluate = _make_evaluate(task, graphdef) if evaluate is None else evaluate
        self.data_parallel = isinstance(self.train_step, DataParallelTrainStep)
        self.opt_state = (self.train_step.init if self.data_parallel else tx.init)(self.params)
        self.config_json = _comparable(json.loads(config.to_json()))
        self.curves: dict[str, list] = {"step": []}
        for split in ("train", "test"):
            for m in ["loss", "accuracy"] if task.has_accuracy else ["loss"]:
                self.curves[f"{split}_{m}"] = []
        # Per training step: the norms recorded by `training_optimizer`'s recorders (a
        # plain `tx` records nothing). Device scalars wait in `pending` and are fetched
        # together at eval and checkpoint steps: no host sync per step.
        self.recording = isinstance(self.opt_state, tuple) and all(
            isinstance(self.opt_state[i], gdtx.RecordGradNormState) for i in (0, -1)
        )
        self.step_log: dict[str, list] = {"grad_norm": [], "update_norm": []}
        self.pending: list[tuple[jax.Array, jax.Array]] = []
        if self.data_parallel:
            # Per step: the bytes each device sent (from the step's metrics: Python
            # numbers, no host sync) and, at each evaluation, their running sum.
            self.step_log.update(bytes_sent=[], payload_bytes=[])
            self.curves["cumulative_bytes_sent"] = []
        self.manager = _checkpoint_manager(config, workdir, label)
        self.workdir = workdir
        self.first_step = 1
        self.first_inputs = None  # A data-parallel run's first inputs, for the HLO.
        self.compile_time = 0.0  # Seconds of the first train step: mostly compilation.
        self.train_time = 0.0  # Seconds spent in train steps after the first one.
        self.timed_steps = 0

    def resume(self) -> None:
        """Restores the latest checkpoint of this workdir and label, if there is one."""
        import orbax.checkpoint as ocp

        manager = self.manager
        if manager is None or manager.latest_step() is None:
            return
        # The metadata first: a checkpoint of another config (another optimizer, or
        # a refined schedule, whose state differs) fails on the config, not the state.
        meta = manager.restore(
            manager.latest_step(), args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        )["meta"]
        if meta["config"] != self.config_json:
            raise ValueError(
                f"The checkpoint in {self.workdir!r} for {self.label!r} was written with a "
                "different config; use a fresh --workdir."
            )
        abstract = checkpoint.abstract_train_state(self.tx, self.params, key=self.key)
        restored = manager.restore(
            manager.latest_step(),
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)),
        )["state"]
        self.params, self.opt_state, self.key = (
            restored["params"],
            restored["opt_state"],
            restored["key"],
        )
        self.sampler.load_state_dict(meta["sampler"])
        self.curves = meta["curves"]
        self.step_log = meta["step_log"]
        self.first_step = meta["step"] + 1

    def flush(self) -> None:
        """Fetches the pending per-step norms into ``step_log`` (one host sync)."""
        for g, u in jax.device_get(self.pending):
            if g is not None:
                self.step_log["grad_norm"].append(float(g))
            self.step_log["update_norm"].append(float(u))
        self.pending.clear()

    def record(self, step: int) -> None:
        """Evaluates the model on every evaluation batch and appends to the curves."""
        self.curves["step"].append(step)
        model = self.params
        if self.data_parallel:
            self.curves["cumulative_bytes_sent"].append(float(sum(self.step_log["bytes_sent"])))
            model = self.train_step.model_params(self.params, self.initial_params)
        for split, batch in self.task.eval_batches.items():
            loss, acc = self.evaluate(model, batch)
            self.curves[f"{split}_loss"].append(float(loss))
            if self.task.has_accuracy:
                self.curves[f"{split}_accuracy"].append(float(acc))

    def save(self, step: int, force: bool = False) -> None:
        """Checkpoints step ``step`` when the manager's interval (or ``force``) says so."""
        import orbax.checkpoint as ocp

        manager = self.manager
        if manager is None or not (force or manager.should_save(step)):
            return
        self.flush()
        meta = {
            "step": step,
            "sampler": self.sampler.state_dict(),
            "curves": self.curves,
            "step_log": self.step_log,
            "config": self.config_json,
        }
        state = {"params": self.params, "opt_state": self.opt_state, "key": self.key}
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                # Saves are asynchronous and training goes on appending to `curves`:
                # hand Orbax a snapshot (a JSON round trip), not the live lists.
                meta=ocp.args.JsonSave(json.loads(json.dumps(meta))),
            ),
            force=force,
        )

    def one_step(self, step: int) -> jax.Array:
        """Runs training step ``step`` and logs its norms and bytes; returns the loss."""
        batch = self.task.batch(self.sampler.next())
        if self.data_parallel and step == self.first_step:
            self.first_inputs = (self.params, self.opt_state, self.key, batch)  # no donation
        self.params, self.opt_state, self.key, loss, *step_metrics = self.train_step(
            self.params, self.opt_state, self.key, batch
        )
        if self.recording:
            self.pending.append(_norms_of(self.opt_state))
        if self.data_parallel:
            (metrics_dp,) = step_metrics
            self.pending.append((None, metrics_dp["update_norm"]))
            sent, payload = self.train_step.bytes_of_step(step, metrics_dp)
            self.step_log["bytes_sent"].append(sent)
            self.step_log["payload_bytes"].append(payload)
        return loss

    def train(self, last: int) -> None:
        """Steps ``first_step .. last``, evaluating and checkpointing on schedule."""
        config = self.config
        to_eval = set(eval_steps(config.num_steps, config.eval_every))
        if self.first_step == 1:
            self.record(0)
        in_place = _refreshes_in_place(sys.stderr)
        with tqdm.tqdm(
            total=config.num_steps,
            initial=self.first_step - 1,
            desc=self.label,
            unit="step",
            disable=not config.progress_bar,
            # tqdm's own defaults are 0.1 s and 10 s
            mininterval=0.1 if in_place else _LOG_REFRESH_S,
            maxinterval=10.0 if in_place else _LOG_REFRESH_S,
        ) as bar:
            segment_start = time.perf_counter()
            for step in range(self.first_step, last + 1):
                loss = self.one_step(step)
                if step == self.first_step:
                    jax.block_until_ready(loss)
                    self.compile_time = time.perf_counter() - segment_start
                    segment_start = time.perf_counter()
                else:
                    self.timed_steps += 1
                bar.update()
                if step in to_eval:
                    jax.block_until_ready(loss)
                    self.train_time += time.perf_counter() - segment_start
                    self.flush()
                    self.record(step)
                    curves = self.curves
                    postfix = {k: f"{v[-1]:.4f}" for k, v in curves.items() if k != "step"}
                    bar.set_postfix(postfix, refresh=in_place)
                    segment_start = time.perf_counter()
                self.save(step, force=step == config.num_steps)

    def close(self) -> None:
        if self.manager is not None:
            # Saves are asynchronous: a checkpoint is complete only after this.
            self.manager.wait_until_finished()
            self.manager.close()

    def results(self) -> dict[str, Any]:
        """Final and best metrics, timings, curves and the per-step logs of the run."""
        self.flush()
        wall_time = time.perf_counter() - self.start
        curves, has_accuracy = self.curves, self.task.has_accuracy
        primary = "test_accuracy" if has_accuracy else "test_loss"
        best = int(np.argmax(curves[primary]) if has_accuracy else np.argmin(curves[primary]))
        results = {
            "final_train_loss": curves["train_loss"][-1],
            "final_test_loss": curves["test_loss"][-1],
            "best_test_loss": min(curves["test_loss"]),
            "best_step": curves["step"][best],
        }
        if has_accuracy:
            results.update(
                final_test_accuracy=curves["test_accuracy"][-1],
                best_test_accuracy=curves["test_accuracy"][best],
                final_train_accuracy=curves["train_accuracy"][-1],
            )
        train_time = self.train_time
        results.update(
            {
                # Everything for this optimizer in this process: init, restore,
                # compilation, training and evals.
                "wall_time_s": wall_time,
                "compile_time_s": self.compile_time,
                # Steady-state training speed: excludes the first step and the evals.
                "steps_per_sec": (self.timed_steps / train_time if train_time > 0 else None),
                "resumed_from_step": self.first_step - 1,
                "curves": curves,
            }
        )
        if self.recording:
            results.update(
                grad_norms=self.step_log["grad_norm"],
                update_norms=self.step_log["update_norm"],
            )
        if self.data_parallel:
            results.update(
                _data_parallel_results(
                    self.config, self.train_step, self.step_log, self.first_inputs
                )
            )
        return results


def _data_parallel_results(config, train_step, step_log, first_inputs) -> dict[str, Any]:
    """Bytes per device per step: the step's own accounting and the compiled HLO's.

    ``bytes_sent_per_step`` (ring algorithms) and ``payload_bytes_per_step`` (the
    collectives' operands) are the means over the steps (a local-SGD row sends
    on synchronising steps only). ``hlo_operand_bytes`` sums the operands of every
    collective in the compiled step (``hlo_collectives``, listed in
    ``hlo_collectives``), including the 4-byte means of the loss (and, for
    per-device parameters, of the update norm) that the payload leaves out.
    ``hlo_operand_bytes_per_step`` is the same per step: for a local-SGD row the
    exchange sits in a conditional branch taken every ``sync_every`` steps, so
    its non-scalar collectives count ``1 / sync_every``.
    """
    sent, payload = step_log["bytes_sent"], step_log["payload_bytes"]
    collectives = train_step.hlo_collectives(*first_inputs)
    every = train_step.every
    total = sum(c.operand_bytes for c in collectives)
    # The metrics' means (the loss; with per-device parameters also the update
    # norm, the two fused into one 8-byte all-reduce): a few f32 scalars, every step.
    scalars = sum(c.operand_bytes for c in collectives if c.operand_bytes <= 16)
    return {
        "data_parallel_devices": config.data_parallel_devices,
        "sync_every": every,
        "update_norms": step_log["update_norm"],
        "bytes_sent_per_step": float(np.mean(sent)),
        "payload_bytes_per_step": float(np.mean(payload)),
        "bytes_sent": sent,
        "hlo_operand_bytes": total,
        "hlo_operand_bytes_per_step": scalars + (total - scalars) / every,
        "hlo_collectives": [
            {"op": c.op, "dtypes": list(c.dtypes), "operand_bytes": c.operand_bytes}
            for c in collectives
        ],
    }


def plot_curves(results: dict[str, Any], path: str) -> None:
    """Saves loss (and accuracy) against steps, one colour per optimizer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_accuracy = all("test_accuracy" in r["curves"] for r in results["optimizers"].values())
    fig, axes = plt.subplots(1, 2 if has_accuracy else 1, figsize=(11 if has_accuracy else 6, 4.2))
    ax_loss = axes[0] if has_accuracy else axes
    for i, (label, r) in enumerate(results["optimizers"].items()):
        c = r["curves"]
        color = f"C{i % 10}"
        ax_loss.plot(c["step"], c["test_loss"], color=color, label=f"{label} test")
        ax_loss.plot(
            c["step"], c["train_loss"], color=color, linestyle="--", label=f"{label} train"
        )
        if has_accuracy:
            axes[1].plot(c["step"], c["test_accuracy"], color=color, label=f"{label} test")
    ax_loss.set(title="Loss", xlabel="step", ylabel="loss", yscale="log")
    ax_loss.grid(True, alpha=0.3)
    ax_loss.legend(fontsize="small")
    if has_accuracy:
        # Accuracy starts near chance at step 0; zoom in on the part after it.
        later = [
            a for r in results["optimizers"].values() for a in r["curves"]["test_accuracy"][1:]
        ]
        first = [r["curves"]["test_accuracy"][0] for r in results["optimizers"].values()]
        bottom = max(0.0, min([max(first) + 0.5 * (max(later, default=1) - max(first)), *later]))
        axes[1].set(title="Test accuracy", xlabel="step", ylabel="accuracy")
        axes[1].set_ylim(bottom=max(0.0, bottom - 0.02))
        axes[1].grid(True, alpha=0.3)
        axes[1].legend(fontsize="small")
    cfg = results["config"]
    fig.suptitle(
        f"{results['task']}: optimizer comparison "
        f"(batch {cfg['batch_size']}, {cfg['num_steps']} steps, seed {cfg['seed']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def summary_table(results: dict[str, Any]) -> str:
    """A Markdown table with one row per optimizer."""
    has_accuracy = all("final_test_accuracy" in r for r in results["optimizers"].values())
    acc_head = "| final test acc | best test acc " if has_accuracy else ""
    lines = [
        f"| optimizer | lr {acc_head}| final train loss | final test loss "
        "| wall time (s) | steps/s |",
        "|---|---:|" + ("---:|---:|" if has_accuracy else "") + "---:|---:|---:|---:|",
    ]
    for label, r in results["optimizers"].items():
        acc = (
            f"| {r['final_test_accuracy']:.4f} | {r['best_test_accuracy']:.4f} "
            if has_accuracy
            else ""
        )
        lines.append(
            f"| {label} | {r['learning_rate']:g} {acc}| {r['final_train_loss']:.4f} "
            f"| {r['final_test_loss']:.4f} | {r['wall_time_s']:.1f} "
            f"| {_fmt(r['steps_per_sec'], '.0f')} |"
        )
    return "\n".join(lines)


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes ``config.json`` (the resolved config, indented) to ``workdir``; returns its path.

    A ``config.json`` of another config next to checkpoints is left alone: those
    checkpoints belong to it, and resuming from them fails in ``train_one``.
    """
    path = os.path.join(workdir, "config.json")
    resolved = json.loads(config.to_json())
    if os.path.exists(path) and os.path.isdir(os.path.join(workdir, "checkpoints")):
        with open(path) as f:
            try:
                previous = json.load(f)
            except json.JSONDecodeError:
                previous = None
        if previous is not None and _comparable(previous) != _comparable(resolved):
            return path
    with open(path, "w") as f:
        json.dump(resolved, f, indent=2)
        f.write("\n")
    return path


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    stop_after: int | None = None,
    compiled: CompiledRuns | None = None,
) -> dict[str, Any] | None:
    """Trains one model per ``config.optimizers`` entry and compares them.

    Args:
      config: the experiment's hyperparameters, see ``configs/default.py``.
      workdir: directory for ``results.json``, ``curves.png``, ``summary.md``,
        ``config.json`` and ``checkpoints/``; created if missing. If it holds checkpoints of
        the same config, training resumes from them.
      stop_after: stop every optimizer after this step, leaving checkpoints
        but no results (simulates a preemption; for tests).
      compiled: a :class:`CompiledRuns` shared with other calls, to reuse the
        task and compiled functions when the config is the same; None compiles
        afresh.

    Returns:
      The dict that is written to ``results.json`` (None when stopped early).
    """
    os.makedirs(workdir, exist_ok=True)
    # Build every optimizer first so that a typo fails before any training.
    labels = _labels(config.optimizers)
    sources = refinement_sources(config, labels)
    txs = [
        training_optimizer(config, c, _refined_schedule(config, source))
        for c, source in zip(config.optimizers, sources, strict=True)
    ]
    if data_parallel_axis(config) is not None:
        data_parallel_mesh(config)  # Too few devices, checkpoints, ...: fail before any output.
    write_config(config, workdir)
    # Runs of the same config sharing `compiled` reuse the task and the compiled
    # functions of the previous run. (The refinement's norms are part of the key:
    # the run it refines may have changed.)
    cache_key = json.dumps([_comparable(json.loads(config.to_json())), sources], sort_keys=True)
    runs = CompiledRuns() if compiled is None else compiled
    entry = runs.get(cache_key, lambda: _compile_runs(config, txs))
    task = entry["task"]
    results = _results_header(config, task)
    for label, opt_config, tx, train_step, source in zip(
        labels, config.optimizers, txs, entry["train_steps"], sources, strict=True
    ):
        metrics = train_one(
            config,
            label,
            tx,
            task,
            workdir,
            stop_after=stop_after,
            evaluate=entry["evaluate"],
            train_step=train_step,
        )
        if metrics is None:
            continue
        results["optimizers"][label] = {
            "name": opt_config.name,
            "learning_rate": opt_config.learning_rate,
            **(
                {}
                if source is None
                else {"schedule": "refined", "refined_from": config.refine_from}
            ),
            **metrics,
        }
        results["optimizers"][label]["grad_norm_kind"] = grad_norm_kind(config, opt_config)
    if stop_after is not None and stop_after < config.num_steps:
        return None

    _write_results(results, workdir, task.title)
    return results


def _compile_runs(config: ml_collections.ConfigDict, txs: list) -> dict[str, Any]:
    """The task, its evaluation and one compiled train step per optimizer of ``config``."""
    task = tasks.make_task(config)
    graphdef, _ = nnx.split(task.make_model(nnx.Rngs(config.seed)), nnx.Param)
    return {
        "task": task,
        "evaluate": _make_evaluate(task, graphdef),
        "train_steps": [
            _make_train_step(config, task, graphdef, tx, c)
            for tx, c in zip(txs, config.optimizers, strict=True)
        ],
    }


def _results_header(config: ml_collections.ConfigDict, task: tasks.Task) -> dict[str, Any]:
    """``results.json`` before any optimizer ran: the config, the task, the versions."""
    return {
        # to_dict() leaves the ConfigDicts inside config.optimizers unconverted.
        "config": json.loads(config.to_json()),
        "task": task.title,
        "environment": {
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "gdtx": gdtx.__version__,
            "backend": jax.default_backend(),
            "python": platform.python_version(),
        },
        "num_train_examples": task.num_train,
        "num_test_examples": task.num_test,
        "optimizers": {},
    }


def _write_results(results: dict[str, Any], workdir: str, title: str) -> None:
    """Writes ``results.json``, ``curves.png`` and ``summary.md``; prints the table."""
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot_curves(results, os.path.join(workdir, "curves.png"))
    table = summary_table(results)
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(f"# {title}\n\n{table}\n")
    print(table, flush=True)

"""One data-parallel training step for any transformation, optax's or gdtx's collectives.

:func:`data_parallel_step` turns ``loss_fn(params, batch, *args)`` and an
optimizer into a jitted ``step(params, opt_state, batch, *args)`` over a mesh
axis, with a matching ``init``. What crosses the wire depends on the
transformation, never on the user's code:

- an optax (or any non-collective) transformation gets the mean of the
  devices' gradients, one float32 all-reduce over the axis, as ``jax.jit``
  with a sharded batch would do;
- a gdtx collective (:func:`gdtx.majority_vote`, :func:`gdtx.signum_vote`,
  :func:`gdtx.compressed_mean`, :func:`gdtx.error_feedback`, alone or chained)
  gets each device's own gradient and does its own exchange: the builder
  differentiates ``jax.lax.pcast(params, axis, to="varying")``, so no float32
  gradient is all-reduced before the compressor sees it.

Which case applies is read from the transformation itself: every gdtx
collective declares its exchanges when traced
(:func:`gdtx.distributed.recording_exchanges`), and the builder traces
``update`` once abstractly to find them. The same declarations give the bytes
each device sends per step, reported in the step's metrics.

On a mesh with more axes than ``axis`` (e.g. ``("data", "model")``), the step is
a ``jax.shard_map`` that is manual over ``axis`` only: parameters keep their
sharding along the other axes (the compiler partitions the model along them),
and every collective exchanges over ``axis`` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdtx._core.collectives import axis_names
from gdtx._core.extra_args import required_extra_args
from gdtx.distributed import Exchange, per_device_specs, recording_exchanges

_P = jax.sharding.PartitionSpec
_OWNER = "gdtx.data_parallel_step"
_COMPUTABLE_EXTRA_ARGS = ("value", "value_fn", "grad_fn")


class DataParallel(NamedTuple):
    """What :func:`data_parallel_step` returns.

    Attributes:
      init: ``init(params) -> opt_state``, the optimizer state placed on the
        mesh: per-device leaves (a worker's momentum or residual) sharded along
        the data axis, leaves shaped like a parameter sharded like it along the
        other axes, the rest replicated.
      step: ``step(params, opt_state, batch, *args) -> (params, opt_state,
        metrics)``, jitted (donating ``params`` and ``opt_state`` when asked).
      exchanges: ``exchanges(params, opt_state, batch, *args) -> list[Exchange]``,
        what one step puts on the wire (over the data axis), from the
        transformation's own accounting, without running the step.
    """

    init: Callable[[Any], Any]
    step: Callable[..., tuple[Any, Any, dict[str, Any]]]
    exchanges: Callable[[Any], list[Exchange]]


class _Layout(NamedTuple):
    param_shardings: Any
    state_specs: Any
    state_shardings: Any
    init: Callable
    steps: dict
    per_device: bool
    param_in_specs: Any


def _declares_per_device_params(state: Any) -> bool:
    """Whether a node of ``state`` (e.g. in a chain) has ``per_device_params = True``."""
    found = []

    def visit(node):
        if getattr(type(node), "per_device_params", False) is True:
            found.append(node)
        return node

    jax.tree.map(visit, state, is_leaf=lambda n: getattr(type(n), "per_device_params", False))
    return bool(found)


class _Step(NamedTuple):
    fn: Callable
    log: list
    collective: bool


def _spec_of(owner_arg: str, x: Any, mesh: jax.sharding.Mesh, axis: str, path: str) -> _P:
    """The mesh ``PartitionSpec`` of a parameter leaf (``P()`` when not sharded on ``mesh``)."""
    sharding = getattr(x, "sharding", None)
    spec = getattr(sharding, "spec", None)
    if not isinstance(sharding, jax.sharding.NamedSharding) or spec is None:
        return _P()
    if tuple(sharding.mesh.axis_names) != tuple(mesh.axis_names):
        return _P()
    for part in spec:
        if part is not None and axis in axis_names(part):
            raise ValueError(
                f"{_OWNER}: the parameter at {path} of `{owner_arg}` is sharded along the "
                f"data axis {axis!r} (spec {spec}). Data parallelism replicates parameters "
                f"along {axis!r}: shard them along the other mesh axes only (e.g. "
                f"NamedSharding(mesh, P(None, 'model'))), or use another `axis`."
            )
    return spec


def _paths(tree: Any) -> list[tuple[Any, ...]]:
    return [path for path, _ in jax.tree.flatten_with_path(tree)[0]]


def _state_shardings(state_shapes, state_specs, params, param_specs, mesh, axis):
    """Shardings of the state: per-device along ``axis``, like the params along the others.

    A state leaf whose key path ends with a parameter's path and whose shape is the
    parameter's (or the parameter's with a leading device dimension) is sharded
    like that parameter; other leaves are replicated (besides ``axis``).
    """
    param_items = [
        (path, np.shape(leaf), spec)
        for (path, leaf), spec in zip(
            jax.tree.flatten_with_path(params)[0], jax.tree.leaves(param_specs), strict=True
        )
    ]
    flat_state, treedef = jax.tree.flatten_with_path(state_shapes)
    flat_specs = jax.tree.leaves(state_specs, is_leaf=lambda s: isinstance(s, _P))
    shardings = []
    for (path, leaf), data_spec in zip(flat_state, flat_specs, strict=True):
        per_device = len(data_spec) > 0 and data_spec[0] == axis
        shape = tuple(leaf.shape)[1:] if per_device else tuple(leaf.shape)
        model_spec = ()
        for p_path, p_shape, p_spec in param_items:
            if len(path) >= len(p_path) and tuple(path[-len(p_path) :]) == tuple(p_path):
                if shape == tuple(p_shape):
                    model_spec = tuple(p_spec)
                    break
        spec = _P(axis, *model_spec) if per_device else _P(*model_spec)
        shardings.append(jax.sharding.NamedSharding(mesh, spec))
    return jax.tree.unflatten(treedef, shardings)


def _aux_mean(aux: Any, axis: str) -> Any:
    def reduce(a):
        a = jnp.asarray(a)
        if jnp.issubdtype(a.dtype, jnp.inexact):
            return jax.lax.pmean(a, axis)
        return jax.lax.psum(a, axis)

    return jax.tree.map(reduce, aux)


def data_parallel_step(
    loss_fn: Callable[..., Any],
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    *,
    axis: str = "data",
    has_aux: bool = False,
    donate: bool = True,
) -> DataParallel:
    """A jitted data-parallel training step and its ``init``, for any transformation.

    With ``N`` devices along ``axis``, device ``k`` holds the ``k``-th slice
    ``B_k`` of the global batch (its leading dimension split ``N`` ways) and
    computes its own loss and gradient at the shared parameters ``theta``:

    .. math::

      \\ell_k = \\mathrm{loss\\_fn}(\\theta, B_k), \\qquad g_k = \\nabla_\\theta \\ell_k .

    Then, by the kind of ``tx``:

    - **not a collective** (``optax.adam``, any gdtx optimizer without an axis):
      ``u, s = tx.update(mean_k g_k, s, theta)``, the mean taken by one float32
      all-reduce (``lax.pmean``) over ``axis``; the state is replicated;
    - **a gdtx collective over** ``axis`` (its ``update`` declares an exchange
      over ``axis`` when traced, see :func:`gdtx.distributed.recording_exchanges`):
      ``u, s = tx.update(g_k, s, theta)`` on every device with its own
      ``g_k`` (the builder differentiates ``jax.lax.pcast(theta, axis,
      to="varying")``), so only what the collective sends crosses the wire. The
      state's per-device fields (``per_device_fields``, e.g. a worker's momentum)
      are sharded along ``axis`` with :func:`gdtx.per_device_specs`;

    and ``theta <- optax.apply_updates(theta, u)``, identical on every device.
    Extra arguments that ``tx`` declares (:func:`gdtx.required_extra_args`) and
    that the builder can compute are supplied: ``value`` (the loss),
    ``value_fn(p)`` and ``grad_fn(p)`` (the loss and gradient at ``p`` on the same
    batch: the local one for a collective, the global mean otherwise).

    ``metrics`` holds ``loss`` (the mean of the ``ell_k``), ``update_norm``
    (``||u||_2`` over all leaves), ``bytes_sent`` (bytes each device sends per
    step with ring algorithms, from the transformation's declared exchanges:
    ``(N-1) b`` for an all-gather of ``b`` bytes, ``2 (N-1)/N b`` for an
    all-reduce), ``payload_bytes`` (the ``b``'s summed: each device's
    collective operands, what ``gdtx.hlo_collectives`` reads in the
    compiled HLO) and, with ``has_aux``, ``aux`` (its float leaves averaged
    over devices, integer leaves summed). On a mesh with other axes the byte
    counts are per data-parallel worker (all its shards along the other axes
    together). ``bytes_sent`` and ``payload_bytes`` are Python numbers.

    Parameters keep their sharding along the mesh's other axes (e.g. ``P(None,
    "model")``); along ``axis`` they are replicated. The batch is any pytree whose
    leaves have a leading dimension divisible by ``N``; it is sharded along ``axis``
    (a global ``jax.Array`` on several processes). ``*args`` are passed to
    ``loss_fn`` unchanged on every device (e.g. a PRNG key).

    Args:
      loss_fn: ``loss_fn(params, batch, *args) -> loss`` (a scalar), or ``(loss,
        aux)`` with ``has_aux``. It sees one device's slice of the batch.
      tx: any optax ``GradientTransformation``; a gdtx collective must be built
        with ``axis_name=axis``.
      mesh: a ``jax.sharding.Mesh`` with an axis named ``axis``.
      axis: the data-parallel mesh axis.
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
      donate: donate ``params`` and ``opt_state`` to the step (their buffers are
        reused; do not read the old ones afterwards).

    Returns:
      A :class:`DataParallel` ``(init, step, exchanges)``.

    Raises:
      ValueError: when ``mesh`` has no axis ``axis``, a batch leaf's leading
        dimension is not divisible by the axis size, a parameter is sharded along
        ``axis``, ``tx`` exchanges over an axis other than ``axis``, or ``tx``
        requires an extra argument the builder cannot compute.

    Examples:
      A linear least-squares model over every device of a 1-D mesh, with the
      sign majority vote (the doctest may see one device; any count works):

      >>> import jax, jax.numpy as jnp, optax, gdtx
      >>> n = jax.device_count()
      >>> mesh = jax.make_mesh((n,), ("data",))
      >>> def loss_fn(w, batch):
      ...     x, y = batch
      ...     return jnp.mean((x @ w - y) ** 2)
      >>> tx = optax.chain(gdtx.majority_vote("data"), optax.sgd(0.1))
      >>> init, step, _ = gdtx.data_parallel_step(loss_fn, tx, mesh)
      >>> w = jnp.zeros(3)
      >>> x = jnp.ones((4 * n, 3)); y = jnp.full(4 * n, 3.0)
      >>> state = init(w)
      >>> w, state, metrics = step(w, state, (x, y))
      >>> print(w, metrics["loss"])
      [0.1 0.1 0.1] 9.0

    References:
      Bernstein et al., `signSGD with Majority Vote is Communication Efficient
      and Fault Tolerant <https://arxiv.org/abs/1810.05291>`_, ICLR 2019;
      JAX documentation, `Manual parallelism with shard_map
      <https://docs.jax.dev/en/latest/notebooks/shard_map.html>`_.
    """
    _check_arguments(loss_fn, tx, mesh, axis)
    builder = _Builder(loss_fn, tx, mesh, axis, has_aux=has_aux, donate=donate)

    def step(params, opt_state, batch, *args):
        return builder.step(params, opt_state, batch, *args)

    step.lower = builder.lower
    return DataParallel(builder.init, step, builder.exchanges)


def _check_arguments(loss_fn: Any, tx: Any, mesh: Any, axis: Any) -> None:
    """The argument checks of :func:`data_parallel_step`, each naming the fix."""
    if not callable(loss_fn):
        raise TypeError(f"{_OWNER}: `loss_fn` must be callable, got {loss_fn!r}.")
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(
            f"{_OWNER}: `tx` must be an optax GradientTransformation, got {tx!r} "
            f"(a {type(tx).__name__})."
        )
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(
            f"{_OWNER}: `mesh` must be a jax.sharding.Mesh (e.g. jax.make_mesh((n,), "
            f"({axis!r},))), got {mesh!r}."
        )
    if not isinstance(axis, str):
        raise TypeError(f"{_OWNER}: `axis` must be a mesh axis name (a str), got {axis!r}.")
    if axis not in mesh.axis_names:
        raise ValueError(
            f"{_OWNER}: `mesh` has axes {tuple(mesh.axis_names)} but no axis `axis`={axis!r}. "
            f"Build the mesh with it (e.g. jax.make_mesh((jax.device_count(),), ({axis!r},))) "
            f"or pass one of {tuple(mesh.axis_names)} as `axis`."
        )
    unknown = sorted(required_extra_args(tx) - set(_COMPUTABLE_EXTRA_ARGS))
    if unknown:
        raise ValueError(
            f"{_OWNER}: `tx` requires the extra argument(s) {unknown}, which the builder "
            f"cannot compute (it supplies {list(_COMPUTABLE_EXTRA_ARGS)}). Write the step "
            "with jax.shard_map by hand (docs/guides/data_parallel.md) for this transformation."
        )


def _abstract(x: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))


def _shapes_key(tree: Any) -> tuple:
    """A hashable key of a tree's structure, shapes and dtypes (one compilation each)."""
    leaves, treedef = jax.tree.flatten(tree)
    return (treedef, tuple((np.shape(x), str(jnp.result_type(x))) for x in leaves))


class _Builder:
    """The state behind one :func:`data_parallel_step`: layouts and steps per input shapes.

    A layout (the shardings of the params and state, and the jitted ``init``) is
    built once per parameter structure; a compiled step once per layout and
    (state, batch, args) shapes. Each step first traces ``tx.update`` abstractly
    to learn whether it is a collective over ``axis`` (see the module docstring).
    """

    def __init__(self, loss_fn, tx, mesh, axis, *, has_aux: bool, donate: bool):
        self.loss_fn, self.tx, self.mesh, self.axis = loss_fn, tx, mesh, axis
        self.has_aux, self.donate = has_aux, donate
        self.required = required_extra_args(tx)
        self.num_devices = mesh.shape[axis]
        self.manual = frozenset({axis})
        self.layouts: dict[Any, _Layout] = {}

    # -- the per-device computation ------------------------------------------------

    def split_loss(self, p, batch, args):
        """``(loss, aux)`` of ``loss_fn`` (``aux`` is None without ``has_aux``)."""
        out = self.loss_fn(p, batch, *args)
        if self.has_aux:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(
                    f"{_OWNER}: with has_aux=True, `loss_fn` must return (loss, aux), "
                    f"got a {type(out).__name__}."
                )
            return out
        return out, None

    def local_step(self, params, state, batch, args, collective, log, per_device=False):
        """The per-device step inside shard_map: (loss, aux, updates, new state)."""
        axis = self.axis

        def varying(p):
            if per_device:  # this device's own parameters: already varying over `axis`
                return p
            return jax.lax.pcast(p, axis, to="varying")

        def local_loss(p):
            return self.split_loss(p, batch, args)

        def local_value(p):
            return local_loss(p)[0]

        (loss, aux), grads = jax.value_and_grad(local_loss, has_aux=True)(varying(params))
        if collective:
            value = loss

            def grad_fn(p):
                return jax.grad(local_value)(varying(p))

            value_fn = local_value
        else:
            grads = jax.lax.pmean(grads, axis)
            for g in jax.tree.leaves(grads):
                size = g.size * g.dtype.itemsize
                log.append(
                    Exchange(_OWNER, axis, "all-reduce", g.dtype.name, size, self.num_devices)
                )
            value = jax.lax.pmean(loss, axis)

            def value_fn(p):
                return jax.lax.pmean(local_value(varying(p)), axis)

            def grad_fn(p):
                return jax.lax.pmean(jax.grad(local_value)(varying(p)), axis)

        available = {"value": value, "value_fn": value_fn, "grad_fn": grad_fn}
        extra = {name: available[name] for name in self.required}
        with recording_exchanges() as recorded:
            updates, state = self.tx.update(grads, state, params, **extra)
        log.extend(recorded)
        return loss, aux, updates, state

    # -- inputs and layouts ----------------------------------------------------------

    def check_batch(self, batch):
        leaves = jax.tree.flatten_with_path(batch)[0]
        if not leaves:
            raise ValueError(f"{_OWNER}: `batch` has no arrays; pass the global batch.")
        n, axis = self.num_devices, self.axis
        for path, leaf in leaves:
            shape = np.shape(leaf)
            if not shape or shape[0] % n:
                raise ValueError(
                    f"{_OWNER}: the leaf at {jax.tree_util.keystr(path) or '(the root)'} of "
                    f"`batch` has shape {shape}, whose leading dimension is not divisible by "
                    f"the {n} devices of axis {axis!r}. Pass a global batch of a "
                    f"multiple of {n} examples (e.g. drop the last partial batch)."
                )

    def model_of(self, params):
        """``(model params, stacked)``: per-device params (leading axis N) are recognised
        when a layout with per-device parameters exists for the shapes without that axis."""
        leaves = jax.tree.leaves(params)
        n = self.num_devices
        if leaves and all(np.ndim(x) >= 1 and np.shape(x)[0] == n for x in leaves):
            model = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(np.shape(x)[1:], jnp.result_type(x)), params
            )
            lay = self.layouts.get(_shapes_key(model))
            if lay is not None and lay.per_device:
                return model, True
        return params, False

    def layout(self, params) -> _Layout:
        """Shardings of the params and the state, and the jitted init (per params structure)."""
        params, _ = self.model_of(params)
        key = _shapes_key(params)
        if key not in self.layouts:
            self.layouts[key] = self.new_layout(params)
        return self.layouts[key]

    def new_layout(self, params) -> _Layout:
        mesh, axis = self.mesh, self.axis
        param_specs = jax.tree.unflatten(
            jax.tree.structure(params),
            [
                _spec_of("params", x, mesh, axis, jax.tree_util.keystr(path) or "(the root)")
                for path, x in jax.tree.flatten_with_path(params)[0]
            ],
        )
        param_shardings = jax.tree.map(
            lambda s: jax.sharding.NamedSharding(mesh, s), param_specs, is_leaf=_is_spec
        )
        state_shapes = jax.eval_shape(self.tx.init, jax.tree.map(_abstract, params))
        state_specs = per_device_specs(state_shapes, axis)
        state_shardings = _state_shardings(
            state_shapes, state_specs, params, param_specs, mesh, axis
        )
        init = jax.jit(
            jax.shard_map(
                self.tx.init,
                mesh=mesh,
                in_specs=(_P(),),
                out_specs=state_specs,
                axis_names=self.manual,
            ),
            in_shardings=(param_shardings,),
            out_shardings=state_shardings,
        )
        per_device = _declares_per_device_params(state_shapes)
        param_in_specs = jax.tree.map(lambda _: _P(), param_specs, is_leaf=_is_spec)
        if per_device:
            # Per-device parameters: a leading device axis along `axis`, the model's
            # own sharding along the other axes behind it.
            param_in_specs = jax.tree.map(lambda _: _P(axis), param_specs, is_leaf=_is_spec)
            param_shardings = jax.tree.map(
                lambda s: jax.sharding.NamedSharding(mesh, _P(axis, *s)),
                param_specs,
                is_leaf=_is_spec,
            )
        return _Layout(
            param_shardings, state_specs, state_shardings, init, {}, per_device, param_in_specs
        )

    # -- compiled steps --------------------------------------------------------------

    def compiled_step(self, lay: _Layout, params, state, batch, args) -> _Step:
        """The jitted step for these shapes: probe ``tx`` for a collective, then build."""
        key = _shapes_key((state, batch, args))
        if key not in lay.steps:
            in_specs = (lay.param_in_specs, lay.state_specs, _P(axis := self.axis))
            in_specs += (jax.tree.map(lambda _: _P(), args),)
            in_shardings = (lay.param_shardings, lay.state_shardings)
            in_shardings += (_named(self.mesh, batch, _P(axis)), _named(self.mesh, args, _P()))
            collective = self.is_collective(lay, in_specs, in_shardings, params, state, batch, args)
            lay.steps[key] = self.build_step(
                lay, in_specs, in_shardings, collective, params, batch, args
            )
        return lay.steps[key]

    def enter(self, lay: _Layout, params):
        """This device's parameters inside shard_map (drops the leading device axis)."""
        return jax.tree.map(lambda x: x[0], params) if lay.per_device else params

    def is_collective(self, lay, in_specs, in_shardings, params, state, batch, args) -> bool:
        """Whether ``tx.update`` exchanges over ``axis``, from one abstract trace."""
        probe_log: list[Exchange] = []

        def probe(params, state, batch, args):
            params = self.enter(lay, params)
            self.local_step(params, state, batch, args, True, probe_log, lay.per_device)
            return jnp.zeros([])

        probe_map = jax.shard_map(
            probe, mesh=self.mesh, in_specs=in_specs, out_specs=_P(), axis_names=self.manual
        )
        jax.jit(_placed(probe_map, in_shardings), in_shardings=in_shardings).trace(
            *jax.tree.map(_abstract, (params, state, batch, args))
        )
        axis = self.axis
        others = [e for e in probe_log if axis not in axis_names(e.axis_name)]
        if others:
            raise ValueError(
                f"{_OWNER}: `tx` has a collective ({others[0].owner}) over "
                f"{others[0].axis_name!r}, but the data axis is `axis`={axis!r}. Build the "
                f"collective with axis_name={axis!r}, or pass axis={others[0].axis_name!r}."
            )
        return bool(probe_log) or lay.per_device

    def build_step(self, lay, in_specs, in_shardings, collective, params, batch, args) -> _Step:
        """The jitted shard_map step; its trace fills ``log`` with the step's exchanges."""
        axis, per_device = self.axis, lay.per_device
        log: list[Exchange] = []

        def body(params, state, batch, args):
            del log[:]
            params = self.enter(lay, params)
            loss, aux, updates, state = self.local_step(
                params, state, batch, args, collective, log, per_device
            )
            params = optax.apply_updates(params, updates)
            norm = optax.tree.norm(updates)
            if per_device:
                # updates differ per device: report the root mean square of their norms
                norm = jnp.sqrt(jax.lax.pmean(norm**2, axis))
                params = jax.tree.map(lambda x: x[None], params)
            metrics = {"loss": jax.lax.pmean(loss, axis), "update_norm": norm}
            if self.has_aux:
                metrics["aux"] = _aux_mean(aux, axis)
            return params, state, metrics

        metric_specs = self.metric_specs(params, batch, args)
        mapped = jax.shard_map(
            body,
            mesh=self.mesh,
            in_specs=in_specs,
            out_specs=(lay.param_in_specs, lay.state_specs, metric_specs),
            axis_names=self.manual,
        )
        metric_shardings = jax.tree.map(
            lambda _: jax.sharding.NamedSharding(self.mesh, _P()), metric_specs, is_leaf=_is_spec
        )
        fn = jax.jit(
            _placed(mapped, in_shardings),
            in_shardings=in_shardings,
            out_shardings=(lay.param_shardings, lay.state_shardings, metric_shardings),
            donate_argnums=(0, 1) if self.donate else (),
        )
        return _Step(fn, log, collective)

    def metric_specs(self, params, batch, args) -> dict[str, Any]:
        """Out specs of the metrics: replicated scalars, and ``aux``'s tree with ``has_aux``."""
        specs = {"loss": _P(), "update_norm": _P()}
        if self.has_aux:
            _, aux_shapes = jax.eval_shape(
                lambda p, b, a: self.split_loss(p, b, a),
                jax.tree.map(_abstract, self.model_of(params)[0]),
                _local_batch(batch, self.num_devices),
                jax.tree.map(_abstract, args),
            )
            specs["aux"] = jax.tree.map(lambda _: _P(), aux_shapes)
        return specs

    # -- what DataParallel exposes -------------------------------------------------

    def init(self, params):
        lay = self.layout(params)
        if self.model_of(params)[1]:
            params = jax.tree.map(lambda x: x[0], params)
        return lay.init(params)

    def stacked(self, lay, params):
        """Per-device params (leading axis N): the replicated ones broadcast on first use."""
        if not lay.per_device or self.model_of(params)[1]:
            return params
        n = self.num_devices
        return jax.device_put(
            jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *np.shape(x))), params),
            lay.param_shardings,
        )

    def prepared(self, params, opt_state, batch, args) -> tuple[Any, _Step]:
        """``(params, compiled step)`` for these inputs (per-device params stacked)."""
        lay = self.layout(params)
        params = self.stacked(lay, params)
        return params, self.compiled_step(lay, params, opt_state, batch, args)

    def step(self, params, opt_state, batch, *args):
        self.check_batch(batch)
        params, compiled = self.prepared(params, opt_state, batch, args)
        params, opt_state, metrics = compiled.fn(params, opt_state, batch, args)
        over_axis = [e for e in compiled.log if self.axis in axis_names(e.axis_name)]
        metrics["bytes_sent"] = sum(e.wire_bytes for e in over_axis)
        metrics["payload_bytes"] = sum(e.operand_bytes for e in over_axis)
        return params, opt_state, metrics

    def exchanges(self, params, opt_state, batch, *args):
        self.check_batch(batch)
        params, compiled = self.prepared(params, opt_state, batch, args)
        if not compiled.log:
            compiled.fn.lower(params, opt_state, batch, args)  # traces the body once
        return list(compiled.log)

    def lower(self, params, opt_state, batch, *args):
        params, compiled = self.prepared(params, opt_state, batch, args)
        return compiled.fn.lower(params, opt_state, batch, args)


def _placed(fn: Callable, in_shardings: Any) -> Callable:
    """``fn`` with its inputs typed with ``in_shardings`` first (see :func:`_place`)."""

    def run(*inputs):
        return fn(*jax.tree.map(_place, inputs, in_shardings))

    return run


def _named(mesh: jax.sharding.Mesh, tree: Any, spec: Any) -> Any:
    return jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, spec), tree)


def _place(x: Any, sharding: jax.sharding.NamedSharding) -> Any:
    """``x`` typed with ``sharding`` (resharded on an Explicit mesh, constrained on Auto)."""
    if all(t == jax.sharding.AxisType.Explicit for t in sharding.mesh.axis_types):
        return jax.sharding.reshard(x, sharding)
    return jax.lax.with_sharding_constraint(x, sharding)


def _is_spec(x: Any) -> bool:
    return isinstance(x, _P)


def _local_batch(batch: Any, num_devices: int) -> Any:
    return jax.tree.map(
        lambda b: jax.ShapeDtypeStruct(
            (np.shape(b)[0] // num_devices,) + np.shape(b)[1:], jnp.result_type(b)
        ),
        batch,
    )


__all__ = ["DataParallel", "data_parallel_step"]

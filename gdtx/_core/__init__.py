"""What the method families share, and nothing method-specific.

- :mod:`gdtx._core.validation`: hyperparameter checks that run when values are concrete.
- :mod:`gdtx._core.dtypes`: the dtype policy (state dtypes, arithmetic in at least float32).
- :mod:`gdtx._core.weight_decay`: the three weight-decay modes and the chain that places them.
- :mod:`gdtx._core.extra_args`: declared extra arguments and :func:`gdtx.chain`.
- :mod:`gdtx._core.rectification`: the RAdam variance-rectification term (AdaBelief, RAdam).
"""

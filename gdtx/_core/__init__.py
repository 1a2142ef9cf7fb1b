"""What the method families share, and nothing method-specific.

- :mod:`gdtx._core.validation`: hyperparameter checks that run when values are concrete.
- :mod:`gdtx._core.dtypes`: the dtype policy (state dtypes, arithmetic in at least float32).
- :mod:`gdtx._core.moments`: the per-leaf moment EMAs, their compute dtypes and the
  per-step scalars built once per compute dtype (the Adam-like families).
- :mod:`gdtx._core.weight_decay`: the three weight-decay modes and the chain that places them.
- :mod:`gdtx._core.extra_args`: declared extra arguments and :func:`gdtx.chain`.
- :mod:`gdtx._core.hyperparams`: the decays gdtx builders record for :func:`gdtx.rectify`.
- :mod:`gdtx._core.rectification`: the RAdam variance-rectification term (AdaBelief, RAdam).
- :mod:`gdtx._core.trees`: tree helpers optax does not have (unzipping per-leaf tuples).
- :mod:`gdtx._core.collectives`: mesh-axis helpers, per-device state, the replicated all-gather.
- :mod:`gdtx._core.bits`: fixed-width codes packed into uint32 words (compression payloads).
- :mod:`gdtx._core.keys`: the PRNG key a stochastic transformation carries in its state.
- :mod:`gdtx._core.compressed_collectives`: the compressor checks and the gathered mean of payloads.
- :mod:`gdtx._core.hlo`: the collectives of a compiled step, read from its HLO text.
"""

"""Default config: adam vs. adabelief on scikit-learn's 8x8 digits.

Run with::

  gdtx-train --config configs/default.py --workdir runs/default

Any field can be overridden on the command line, e.g.::

  --config.num_steps=500 --config.optimizers[1].learning_rate=3e-3

The number of optimizers is fixed by this file (a locked config cannot grow
a list from the command line); copy this file to compare a different set.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The hyperparameters of the default comparison."""
    config = ml_collections.ConfigDict()

    # The problem (gdtx/experiments/tasks.py): "digits", "char_lm" or "linear".
    config.task = "digits"

    # One seed for the train/test split, the initial parameters (identical for
    # every optimizer) and the order of the training batches.
    config.seed = 0

    # Data: the 1797 bundled digits; 360 (~20%) are held out for testing.
    config.test_size = 360

    # Model: channels of the two 3x3 convolutions (~10k parameters in total).
    config.features = (16, 32)

    # Training. 1437 training examples / 64 = 22 steps per epoch, so 3000 steps
    # are ~136 epochs: enough for adam to plateau (~98% test accuracy), and
    # only a few seconds per optimizer on a 2-core CPU.
    config.batch_size = 64
    config.num_steps = 3000
    # Evaluate the full train and test splits at step 0, every `eval_every`
    # steps and after the last step (3000 / 50 + 1 = 61 points per curve).
    config.eval_every = 50
    config.progress_bar = True
    # Orbax checkpoints (params, optimizer state, data order, RNG, curves) in
    # <workdir>/checkpoints/ every `checkpoint_every` steps (0: none). Running
    # again with the same --workdir resumes from the latest one.
    config.checkpoint_every = 1000
    config.checkpoints_to_keep = 2

    # Every run records the norm of the raw minibatch gradient at every step
    # (results.json: `grad_norms`): "l2" for SGD-type optimizers, "l1" for
    # Adam-type ones, "auto" picks by the optimizer's name (an entry may set its
    # own `grad_norm`). `refine_from` (a previous run's workdir, "" = off) trains
    # each optimizer with the refined schedule of that run's norms
    # (gdtx.refined, Defazio et al. 2023) instead of its constant learning rate,
    # peaking at the entry's `learning_rate`; `refine_smoothing` is the width of
    # the median filter as a fraction of the recorded steps.
    config.grad_norm = "auto"
    config.refine_from = ""
    config.refine_smoothing = 0.1

    # The optimizers compared side by side, in this order. `name` is a key of
    # `OPTIMIZERS` in gdtx/experiments/train.py, or "gdtx.<alias>" /
    # "optax.<alias>"; an entry may add `kwargs` (a dict passed to the
    # factory; a wrapper such as "gdtx.sam" takes `kwargs.inner`, a dict
    # naming the wrapped optimizer) and a `label` (its name in the results).
    # Extra arguments an optimizer declares (value_fn, grad_fn, grad_variance,
    # ...) are supplied by the training step. 1e-3 is the default learning
    # rate of both papers (Adam: Kingma & Ba 2015; AdaBelief: Zhuang et al.
    # 2020), so neither optimizer is tuned in the other's favour.
    config.optimizers = [
        ml_collections.ConfigDict({"name": "adam", "learning_rate": 1e-3}),
        ml_collections.ConfigDict({"name": "adabelief", "learning_rate": 1e-3}),
    ]

    return config

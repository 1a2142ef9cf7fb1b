"""Command-line entry point: ``gdtx-train --config ... --workdir ...``.

Trains the config's model (the digits CNN, the byte-level Transformer LM or
a linear model: ``gdtx.experiments.tasks``) once per optimizer listed in the
config and writes the comparison to the workdir; see ``gdtx.experiments.train``.
Starting again with the same workdir resumes from its checkpoints. Examples::

  gdtx-train --config configs/default.py --workdir runs/default \\
      --config.num_steps=500
  gdtx-train --config configs/char_lm.py --workdir runs/char_lm
  gdtx-train --config configs/linear.py --show_config
  python -m gdtx.experiments --help

The console shows a one-line header, one progress bar per optimizer and the
summary table; library logging (JAX, absl, Orbax) stays at WARNING unless
``--verbosity`` asks for more (0: INFO).

This module imports only the standard library at import time, so that
``run()`` can explain a missing optional dependency instead of failing with
an ImportError, and ``--help`` works without JAX.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import sys
import textwrap

# GPU convolution gradients use atomics by default, so two runs of the same
# config would differ in the last bits; the comparison must be reproducible.
_DETERMINISTIC_XLA_FLAG = "--xla_gpu_deterministic_ops=true"
# Simulated CPU devices (data_parallel_devices) on a busy machine can reach a
# collective more than XLA:CPU's default 40 s apart, which aborts the run
# ("Fatal Python error: Aborted"); the flag exists from jaxlib 0.10 on (an older
# jaxlib aborts on an unknown flag).
_RENDEZVOUS_TIMEOUT_XLA_FLAG = "--xla_cpu_collective_call_terminate_timeout_seconds=600"


def _xla_flags(flags: str) -> str:
    """``flags`` (the user's XLA_FLAGS) plus gdtx-train's own, where not set already."""
    import jaxlib

    if _DETERMINISTIC_XLA_FLAG not in flags:
        flags = f"{flags} {_DETERMINISTIC_XLA_FLAG}"
    jaxlib_version = tuple(int(part) for part in jaxlib.__version__.split(".")[:2])
    if jaxlib_version >= (0, 10) and "collective_call_terminate" not in flags:
        flags = f"{flags} {_RENDEZVOUS_TIMEOUT_XLA_FLAG}"
    return flags.strip()


# Top-level modules needed by the experiments beyond jax/optax/chex; they
# come with the ``examples`` extra (``pip install -e ".[examples]"`` in a clone).
OPTIONAL_DEPENDENCIES = (
    "absl",
    "ml_collections",
    "flax",
    "orbax",
    "sklearn",
    "matplotlib",
    "tqdm",
)

# The configs shipped with the repository (not installed with the package).
CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"

_HELP_ARGS = ("-h", "-help", "--help", "-?", "--helpshort", "-helpshort")
_HELPFULL_ARGS = ("--helpfull", "-helpfull")

_FLAG_HELP = {
    "config": "the config file: a Python file whose get_config() returns an "
    "ml_collections.ConfigDict (see the shipped configs below).",
    "workdir": "directory for results.json, curves.png, summary.md, config.json and "
    "checkpoints/ (a workdir with checkpoints of the same config resumes).",
    "show_config": "print the resolved config (the file plus --config.* overrides) as JSON "
    "and exit without training.",
}


def missing_dependency() -> str | None:
    """The first optional dependency that cannot be imported, or None."""
    for name in OPTIONAL_DEPENDENCIES:
        try:
            # Returns None for a module that isn't installed (or is blocked by a
            # ``sys.modules[name] = None`` entry).
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return name
    return None


def program_name(argv0: str | None = None) -> str:
    """``gdtx-train`` for the console script, ``python -m gdtx.experiments`` otherwise."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if os.path.basename(argv0) == "gdtx-train":
        return "gdtx-train"
    return "python -m gdtx.experiments"


def _display_path(path: pathlib.Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # Another drive on Windows.
        return str(path)


def shipped_configs() -> list[tuple[str, str]]:
    """``(path, first line of its docstring)`` for every config in ``configs/``."""
    if not CONFIG_DIR.is_dir():
        return []
    out = []
    for path in sorted(CONFIG_DIR.glob("*.py")):
        text = path.read_text(encoding="utf-8").lstrip()
        summary = ""
        if text[:3] in ('"""', "'''"):
            summary = text[3:].strip().splitlines()[0].strip() if text[3:].strip() else ""
        out.append((_display_path(path), summary.replace("``", "")))
    return out


def help_text(prog: str | None = None) -> str:
    """The text of ``--help``: usage, flags, how to override a field, the shipped configs."""
    prog = program_name() if prog is None else prog
    configs = shipped_configs()
    example = configs[0][0] if configs else "configs/default.py"
    for path, _ in configs:
        if path.endswith("default.py"):
            example = path
    width = 24

    def item(name: str, text: str) -> str:
        head = f"  {name:<{width - 2}}" if len(name) < width - 2 else f"  {name}\n{'':{width}}"
        body = textwrap.wrap(text, 88 - width) or [""]
        return head + f"\n{'':{width}}".join(body)

    lines = [
        f"usage: {prog} --config=CONFIG.py --workdir=DIR [--config.FIELD=VALUE ...] [flags]",
        "",
        "Trains the config's model once per optimizer it lists (same initial parameters, same",
        "batches) and writes the comparison to --workdir: results.json, curves.png, summary.md,",
        "config.json and checkpoints/. Run again with the same --workdir, it resumes.",
        "",
        "flags:",
        item("--config=PATH", _FLAG_HELP["config"]),
        item(
            "--config.FIELD=VALUE",
            "override one field of the config, e.g. --config.num_steps=500 or "
            "--config.optimizers[1].learning_rate=3e-3 (an unknown field is an error).",
        ),
        item("--workdir=DIR", _FLAG_HELP["workdir"]),
        item("--show_config", _FLAG_HELP["show_config"]),
        item(
            "--verbosity=N",
            "library logging (JAX, absl, Orbax): -1 WARNING (the default), 0 INFO, 1 DEBUG.",
        ),
        item("--helpfull", "this help and every absl flag."),
        "",
    ]
    if configs:
        lines.append("shipped configs:")
        lines += [item(path, summary) for path, summary in configs]
    else:
        lines.append(
            "shipped configs: configs/*.py in a clone of the gdtx repository (default.py, "
            "char_lm.py, linear.py, least_squares.py)."
        )
    lines += [
        "",
        "examples:",
        f"  {prog} --config {example} --workdir runs/default",
        f"  {prog} --config {example} --workdir runs/short --config.num_steps=500",
        f"  {prog} --config {example} --show_config",
    ]
    return "\n".join(lines) + "\n"


def _define_flags() -> None:
    """Defines --config, --workdir and --show_config (once; absl flags are process-global)."""
    from absl import flags
    from ml_collections import config_flags

    if "workdir" in flags.FLAGS:
        return
    flags.DEFINE_string("workdir", None, _FLAG_HELP["workdir"])
    flags.DEFINE_bool("show_config", False, _FLAG_HELP["show_config"])
    config_flags.DEFINE_config_file("config", None, _FLAG_HELP["config"], lock_config=True)


def _error_text(error: BaseException) -> str:
    """The innermost message of an ``AttributeError(KeyError(...))``, on one line."""
    inner: object = error
    while isinstance(inner, BaseException) and len(inner.args) == 1:
        inner = inner.args[0]
    text = " ".join(str(inner).split())
    return text.replace("' Did you", "'. Did you") + ("" if text.endswith("?") else ".")


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, keeping library logging at WARNING unless --verbosity is given."""
    from absl import flags

    prog = program_name(argv[0])
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as error:
        print(f"{prog}: {error}\nSee {prog} --help.", file=sys.stderr)
        sys.exit(2)
    except (AttributeError, KeyError) as error:
        # ml_collections raises these for an override of a field the config lacks.
        overrides = [a for a in argv[1:] if a.startswith(("--config.", "-config."))]
        if not overrides:
            raise
        print(
            f"{prog}: cannot apply {' '.join(overrides)}: the config has no field "
            f"{_error_text(error)}\nSee {prog} --help; --show_config lists the config's fields.",
            file=sys.stderr,
        )
        sys.exit(2)
    if flags.FLAGS["verbosity"].using_default_value:
        # absl.app.run raises an unset verbosity to INFO (0) right after parsing;
        # setting it here marks it as given, so it stays at WARNING.
        flags.FLAGS.verbosity = -1
    return rest


def config_as_json(config) -> str:
    """The config as indented JSON (what ``--show_config`` prints and config.json holds)."""
    return json.dumps(json.loads(config.to_json()), indent=2)


def _usage_error(message: str) -> None:
    prog = program_name()
    print(f"{prog}: {message}\nSee {prog} --help.", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str]) -> None:
    from absl import flags, logging

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        _usage_error(f"unexpected arguments {argv[1:]}; every option is a --flag.")
    if FLAGS.config is None:
        _usage_error("--config is required, e.g. --config configs/default.py.")
    try:
        resolved = config_as_json(FLAGS.config)
    except OSError as error:  # ml_collections defers a config file's load error to here.
        reason = str(error).strip().splitlines()[-1].strip()
        _usage_error(f"cannot load --config={FLAGS['config'].config_filename}: {reason}")
    if FLAGS.show_config:
        print(resolved)
        return
    if FLAGS.workdir is None:
        _usage_error("--workdir is required, e.g. --workdir runs/default.")

    import jax

    config, workdir = FLAGS.config, FLAGS.workdir
    _simulate_devices(jax, config.get("data_parallel_devices", 0))

    from gdtx.experiments import train

    logging.info("JAX devices: %r", jax.devices())
    logging.info("Config:\n%s", resolved)
    labels = train._labels(config.optimizers)
    resume = os.path.isdir(os.path.join(workdir, "checkpoints"))
    print(
        f"{program_name()}: task {config.get('task', 'digits')}, "
        f"optimizers {', '.join(labels)}, {config.num_steps} steps each, "
        f"workdir {workdir}{' (resuming from its checkpoints)' if resume else ''}",
        flush=True,
    )
    train.train_and_evaluate(config, workdir)
    files = ["results.json", "curves.png", "summary.md", "config.json"]
    if config.get("checkpoint_every", 0):
        files.append("checkpoints/")
    print(f"Wrote {', '.join(files)} to {workdir}", flush=True)


def _simulate_devices(jax, count) -> None:
    """Asks JAX for ``count`` CPU devices (a data-parallel run on one host), if it can.

    ``jax_num_cpu_devices`` (what XLA_FLAGS=--xla_force_host_platform_device_count
    does) acts only before JAX starts its backends; afterwards ``jax.config.update``
    raises a ``RuntimeError``, and the run goes on with the devices JAX has
    (``train.data_parallel_mesh`` refuses too few, naming the fix). It sets the CPU
    client's device count only, so a GPU or TPU host keeps its accelerators (and
    ``data_parallel_mesh`` says to set JAX_PLATFORMS=cpu if they are too few).
    """
    if not isinstance(count, int) or count < 1:
        return  # 0: one device; anything else is refused by data_parallel_mesh.
    if jax.config.jax_num_cpu_devices >= count:
        return  # The user asked for at least as many already.
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:
        # The backends are up (JAX was used before this point): too late to add
        # devices. JAX has no public "are the backends initialised" query; this
        # RuntimeError (its message says the update came too late) is the signal.
        pass


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point (``gdtx-train``; also ``python -m gdtx.experiments``)."""
    argv = list(sys.argv if argv is None else argv)
    args = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    if any(a in _HELP_ARGS for a in args):
        sys.stdout.write(help_text(program_name(argv[0])))
        sys.exit(0)
    missing = missing_dependency()
    if missing is not None:
        print(
            f"{program_name(argv[0])}: missing optional dependency {missing!r}; "
            "install the examples extra from a clone of the gdtx repository: "
            'pip install -c constraints.txt -e ".[examples]"',
            file=sys.stderr,
        )
        sys.exit(1)
    os.environ["XLA_FLAGS"] = _xla_flags(os.environ.get("XLA_FLAGS", ""))
    from absl import app, flags

    _define_flags()
    if any(a in _HELPFULL_ARGS for a in args):
        sys.stdout.write(help_text(program_name(argv[0])))
        sys.stdout.write("\nall flags:\n" + flags.FLAGS.get_help() + "\n")
        sys.exit(0)
    app.run(main, argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()

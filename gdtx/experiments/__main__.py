"""``python -m gdtx.experiments``: the same command as ``gdtx-train``."""

from gdtx.experiments.main import run

if __name__ == "__main__":
    run()

"""MkDocs hooks: render the notebooks of ``notebooks/`` (outside ``docs/``) in the site.

The ``.ipynb`` half of each jupytext pair is added to the site's files before
``mkdocs-jupyter`` looks at them (hence the high priority), so the notebooks live
in one place and the docs never hold a copy that could go stale.
"""

from __future__ import annotations

import pathlib

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parents[2]


@event_priority(100)
def on_files(files, config):
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        files.append(
            File(
                f"notebooks/{path.name}",
                src_dir=str(ROOT),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files

"""Values several test modules share (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import shutil
from pathlib import Path

# One epoch of a tiny timm model on 32 px images: the fastest real run of every flow.
TINY = [
    "data.image_size=32",
    "model.name=test_resnet",
    "train.epochs=1",
    "train.batch_size=16",
    "train.bootstrap=20",
    "analysis.bootstrap=20",
    "analysis.kmeans_seeds=2",
    "analysis.max_faithfulness_points=300",
]


def set_args(*overrides: str) -> list[str]:
    """``--set`` arguments for the CLI: TINY followed by ``overrides``."""
    return [arg for item in [*TINY, *overrides] for arg in ("--set", item)]


def chromium() -> str | None:
    """The headless browser the page-rendering tests use, if installed (CI installs it)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Headless and offline; also the launch arguments of the Playwright checks.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run")  # fmt: skip


def chromium_command(browser: str, profile: Path, *args: str) -> list[str]:
    """A headless, offline Chromium run with its own profile directory."""
    return [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]


def postgres_available() -> bool:
    """PostgreSQL for the local stack: the server binaries, the driver, and (as root) the
    `postgres` user to run it as."""
    import importlib.util
    import os
    import pwd

    from chexflow.errors import ChexflowError
    from deployments.stack import postgres

    try:
        postgres.postgres_bin()
        if os.geteuid() == 0:
            pwd.getpwnam("postgres")
    except (ChexflowError, KeyError):
        return False
    return importlib.util.find_spec("psycopg") is not None

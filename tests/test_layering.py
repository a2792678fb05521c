"""The library never imports Prefect: flows orchestrate, chexflow/ does the work."""

import subprocess
import sys
from pathlib import Path

import chexflow

PACKAGE = Path(chexflow.__file__).parent


def test_library_source_has_no_prefect_import() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(
            line.strip().startswith(("import prefect", "from prefect"))
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []


def test_importing_the_library_does_not_load_prefect() -> None:
    modules = [
        f"chexflow.{p.relative_to(PACKAGE).with_suffix('').as_posix().replace('/', '.')}"
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py"
    ]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + ("assert 'prefect' not in sys.modules, sorted(m for m in sys.modules if 'prefect' in m)")
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""Small radiograph thumbnails as ``data:`` URIs, so the page carries its own images.

A 48-px grayscale WebP (quality 60) of a CheXpert-small radiograph is about 0.5 KB as
base64, so 10,000 images add about 5 MB to the page (bench/bench_explorer.py); a 32-px
PNG is twice that and shows less. Chromium, Firefox and Safari decode WebP.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

THUMBNAIL_PX = 48
WEBP_QUALITY = 60
# A 1×1 grey GIF: what the page shows for an image that could not be read.
MISSING = "data:image/gif;base64,R0lGODlhAQABAIAAAICAgP///yH5BAAAAAAALAAAAAABAAEAAAICRAEAOw=="


def thumbnail_uri(path: Path, size: int = THUMBNAIL_PX, quality: int = WEBP_QUALITY) -> str:
    """One image as a ``size``-px square grayscale WebP ``data:`` URI (aspect squashed,
    as the models see it); ``MISSING`` when the file is absent or does not decode."""
    try:
        with Image.open(path) as image:
            image.draft("L", (size, size))  # JPEG: decode at the smallest scale ≥ size
            small = image.convert("L").resize((size, size), Image.Resampling.LANCZOS)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return MISSING
    buffer = io.BytesIO()
    small.save(buffer, "WEBP", quality=quality, method=4)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_uris(
    root: Path, paths: Sequence[str], size: int = THUMBNAIL_PX, quality: int = WEBP_QUALITY
) -> list[str]:
    """Thumbnails of ``root / path`` for each path, in order (threads: PIL releases the GIL)."""
    root = Path(root)
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: thumbnail_uri(root / p, size, quality), paths))

"""An interactive page of a comparison's aligned maps: every point an evaluation image.

``write_explorer`` takes plain inputs (``ExplorerImage``, ``ExplorerRun``);
``write_comparison_explorer`` builds them from a comparison's ``RunRecord``s and writes
the page. Bokeh draws it; the file embeds everything and opens offline.
"""

from chexflow.explorer.inputs import explorer_images, explorer_runs, write_comparison_explorer
from chexflow.explorer.model import ExplorerImage, ExplorerRun, LabelState
from chexflow.explorer.page import write_explorer

__all__ = [
    "ExplorerImage",
    "ExplorerRun",
    "LabelState",
    "explorer_images",
    "explorer_runs",
    "write_comparison_explorer",
    "write_explorer",
]

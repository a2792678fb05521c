"""CheXpert's columns and the classes chexflow evaluates, in one place."""

from __future__ import annotations

from typing import Literal

CHEXPERT_COLUMNS: tuple[str, ...] = (
    "Path",
    "Sex",
    "Age",
    "Frontal/Lateral",
    "AP/PA",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
OBSERVATIONS: tuple[str, ...] = CHEXPERT_COLUMNS[5:]

# The 5 competition pathologies, in CheXpert's usual order.
PATHOLOGIES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)
NORMAL = "Normal"
NORMAL_COLUMN = "No Finding"
# Classes of the representation analysis: the pathologies plus Normal (= No Finding).
EVAL_CLASSES: tuple[str, ...] = (*PATHOLOGIES, NORMAL)

LabelPolicy = Literal["ones", "zeros", "ignore"]
# GLoRIA/MGCA's simple mapping of uncertain labels (REFERENCES.md).
DEFAULT_POLICY: dict[str, LabelPolicy] = {
    "Atelectasis": "ones",
    "Cardiomegaly": "zeros",
    "Consolidation": "zeros",
    "Edema": "ones",
    "Pleural Effusion": "ones",
    NORMAL: "zeros",
}


def column_of(class_name: str) -> str:
    """The CSV column that holds an evaluation class."""
    return NORMAL_COLUMN if class_name == NORMAL else class_name


def metric_key(class_name: str) -> str:
    """Class name as used in metric keys: lower-case with underscores."""
    return class_name.lower().replace(" ", "_")

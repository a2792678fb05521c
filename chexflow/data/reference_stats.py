"""Label statistics measured on the real CheXpert-v1.0-small ``train.csv``: the calibration target.

Copied value for value from ``chexpert_train_label_stats.json`` (223,414 rows, 64,540
patients, 187,641 studies). Definitions, which `chexflow.data.label_stats` reproduces:

- Image shares (``per_class``, ``images_with_*``, ``single_label_share``,
  ``conditional_positive``, ``distinct_combinations_of_six``) are over frontal images.
  "Positive" is a cell equal to ``1.0``; "labelled" is a non-blank cell; the six classes
  are the five competition pathologies and No Finding.
- ``studies_per_patient``, ``images_per_study``, ``age`` and ``sex`` count all rows
  (``sex`` counts rows, not patients).
- ``positive_again_in_next_study``: over consecutive studies of a patient (by study
  number), the share of a class's positive studies whose next study is positive too.
"""

from __future__ import annotations

from typing import Any, Final

CHEXPERT_TRAIN_STATS: Final[dict[str, Any]] = {
    "source": "CheXpert-v1.0-small train.csv (223,414 rows), frontal images unless stated",
    "rows": 223414,
    "frontal_images": 191027,
    "patients": 64540,
    "studies": 187641,
    "per_class": {
        "Atelectasis": {
            "positive_share": 0.1556,
            "uncertain_share_of_images": 0.1563,
            "negative_share_of_images": 0.0054,
            "blank_share_of_images": 0.6827,
            "uncertain_share_of_labelled": 0.4927,
        },
        "Cardiomegaly": {
            "positive_share": 0.1224,
            "uncertain_share_of_images": 0.0351,
            "negative_share_of_images": 0.0412,
            "blank_share_of_images": 0.8013,
            "uncertain_share_of_labelled": 0.1767,
        },
        "Consolidation": {
            "positive_share": 0.068,
            "uncertain_share_of_images": 0.1276,
            "negative_share_of_images": 0.1026,
            "blank_share_of_images": 0.7018,
            "uncertain_share_of_labelled": 0.4279,
        },
        "Edema": {
            "positive_share": 0.26,
            "uncertain_share_of_images": 0.0619,
            "negative_share_of_images": 0.0833,
            "blank_share_of_images": 0.5948,
            "uncertain_share_of_labelled": 0.1527,
        },
        "Pleural Effusion": {
            "positive_share": 0.4026,
            "uncertain_share_of_images": 0.0501,
            "negative_share_of_images": 0.1324,
            "blank_share_of_images": 0.4149,
            "uncertain_share_of_labelled": 0.0857,
        },
        "No Finding": {
            "positive_share": 0.0889,
            "uncertain_share_of_images": 0.0,
            "negative_share_of_images": 0.0,
            "blank_share_of_images": 0.9111,
            "uncertain_share_of_labelled": 0.0,
        },
    },
    "images_with_exactly_one_of_six": 0.4564,
    "images_with_two_or_more_of_six": 0.2806,
    "images_with_none_of_six": 0.2631,
    "single_label_share": {
        "Atelectasis": 0.0522,
        "Cardiomegaly": 0.0334,
        "Consolidation": 0.0228,
        "Edema": 0.0804,
        "Pleural Effusion": 0.1788,
        "No Finding": 0.0889,
    },
    "conditional_positive": {
        "P(Cardiomegaly | Atelectasis)": 0.114,
        "P(Consolidation | Atelectasis)": 0.0602,
        "P(Edema | Atelectasis)": 0.2884,
        "P(Pleural Effusion | Atelectasis)": 0.4909,
        "P(Atelectasis | Cardiomegaly)": 0.1449,
        "P(Consolidation | Cardiomegaly)": 0.0535,
        "P(Edema | Cardiomegaly)": 0.462,
        "P(Pleural Effusion | Cardiomegaly)": 0.449,
        "P(Atelectasis | Consolidation)": 0.1379,
        "P(Cardiomegaly | Consolidation)": 0.0964,
        "P(Edema | Consolidation)": 0.2337,
        "P(Pleural Effusion | Consolidation)": 0.5111,
        "P(Atelectasis | Edema)": 0.1725,
        "P(Cardiomegaly | Edema)": 0.2175,
        "P(Consolidation | Edema)": 0.0611,
        "P(Pleural Effusion | Edema)": 0.5086,
        "P(Atelectasis | Pleural Effusion)": 0.1897,
        "P(Cardiomegaly | Pleural Effusion)": 0.1366,
        "P(Consolidation | Pleural Effusion)": 0.0863,
        "P(Edema | Pleural Effusion)": 0.3285,
    },
    "distinct_combinations_of_six": 33,
    "studies_per_patient": {
        "mean": 2.907,
        "median": 1.0,
        "max": 91,
        "share_1": 0.52,
        "share_ge_8": 0.0758,
        "quantiles": {"0.5": 1.0, "0.75": 3.0, "0.9": 6.0, "0.99": 20.0},
    },
    "images_per_study": {"1": 153647, "2": 32215, "3": 1779},
    "studies_with_2plus_frontal": 3361,
    "ap_share_of_frontal": 0.8459,
    "ap_pa_values_of_frontal": {"AP": 161590, "PA": 29420, "LL": 16, "RL": 1},
    "age": {"min": 0, "max": 90, "rows_age_0": 3},
    "sex": {"Male": 132636, "Female": 90777, "Unknown": 1},
    "positive_again_in_next_study": {
        "Atelectasis": 0.3029,
        "Consolidation": 0.2636,
        "Edema": 0.5656,
        "Pleural Effusion": 0.7121,
        "No Finding": 0.2811,
    },
}

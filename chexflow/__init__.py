"""chexflow: what does labelling more CheXpert buy your model's representation?"""

__version__ = "0.1.0"

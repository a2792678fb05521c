"""CheXpert data layer: CSV parsing, label policies, splits, fractions, datasets."""

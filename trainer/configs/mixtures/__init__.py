"""Data mixtures: each module defines MIXTURE = [(directory, weight[, name]), …] (see trainer/data.py)."""

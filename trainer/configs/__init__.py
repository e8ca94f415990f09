"""Trainer configs (`.py` files, big_vision style) and data mixtures (`mixtures/*.py`, each defining `MIXTURE`)."""

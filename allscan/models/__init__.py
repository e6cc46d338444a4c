"""Model cards and the on-disk model store (``engines/``)."""

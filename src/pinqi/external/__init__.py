"""External programs (BART) and their file formats: the lowest layer, beside ``_checks``."""

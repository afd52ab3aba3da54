"""Reports drawn from the lake: the coverage picture (``marketlake coverage``) and its text strip."""

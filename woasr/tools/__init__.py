"""Command-line tools on top of the core: simulate, eval, models."""

"""Commands that assemble deployable artifacts; run them from the repository root with ``python -m builders.<name>``."""

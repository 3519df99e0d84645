"""The emulator's self-test: one module per emulator module, sharing ``base``.

Run from the repository root:
    .venv/bin/python -m unittest discover -s tests/emulator -t tests -v
"""

"""Benchmark scripts, and the modules they share with the tests.

Each script runs on its own (``python benchmarks/official_speed.py ...``: Python puts this folder
first on ``sys.path``, so the scripts import one another by their plain names) and as a module of
this package (``import benchmarks.gpu_speed``: the tests, with the repository root on ``sys.path``
through pytest's ``pythonpath`` setting in pyproject.toml). ``official_weights`` is the shared
recipe of the seeded ViT-B/32 weights: the fixture and speed scripts write them, and
``tests/test_official_equivalence.py`` regenerates them to check the fixture's digest.
"""

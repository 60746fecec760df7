"""The PRM kinds: one module each, registering itself with :mod:`engine.prm.registry`.

Adding a kind is one module here plus its test (``tests/unit/test_prm_kinds.py`` shows the shape).
"""

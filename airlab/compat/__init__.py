"""Every use of a private attribute of Lightning, Hydra, Pyro, torch or numpy, behind one door.

May import: nothing.

An upgrade of a library that renames one of these breaks here, where each use says why it is needed, and
``tests/compat/`` fails loudly on the upstream change (each use has a test that checks the internal is
still there and still behaves as airlab relies on). The versions they are tested with are the dependency
ranges in ``pyproject.toml``. Nothing else in airlab touches a library's private name
(``tests/test_structure.py`` checks).
"""

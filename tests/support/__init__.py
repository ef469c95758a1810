"""Black-box test support: a raw-bytes protocol client, server launchers and YAML helpers.

Importable as ``support`` because ``tests/conftest.py`` puts ``tests/`` on ``sys.path``
(pytest's default ``prepend`` import mode).
"""

"""The process: command line, lifecycle (bind, replay, serve, stop), logging, systemd.

``entry.main`` is the console script; it builds a ``shell.config.Config`` and hands it to
``lifecycle.run``. May import every other layer; nothing imports it.
"""

"""The asyncio shell: sockets, the event loop, group commit, HTTP, metrics, hardening.

It drives ``beanstalk_py.protocol`` sessions over ``beanstalk_py.core``'s engine and writes
the engine's records to a journal (``beanstalk_py.binlog``). It imports core, protocol,
binlog and itself, never ``beanstalk_py.app``. Importing this package imports nothing: the
early loop (``startup``) must answer before asyncio is loaded.
"""

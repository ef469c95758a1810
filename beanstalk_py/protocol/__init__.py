"""The beanstalk protocol over the core: bytes in, replies out, no I/O.

``session.Session`` frames command lines and job bodies, checks arguments (``arguments``),
runs the commands against the engine with the connection's ``core.client.Client`` and
queues the replies (``replies``). ``trace.TracingSession`` adds the ``-VV`` command log.
Imports only ``beanstalk_py.core``; never asyncio, sockets, os or time.
"""

"""The beanstalk protocol over the core: bytes in, replies out, no I/O.

``framing.Framer`` cuts command lines and job bodies out of the byte stream and queues the
replies with output back-pressure; ``session.Session`` adds the commands: it checks the
arguments (``arguments``), runs them against the engine with the connection's
``core.client.Client`` and answers (``replies``). ``tracing.TracingSession`` adds the ``-VV``
command log. Imports only ``beanstalk_py.core``; never asyncio, sockets, os or time.
"""

"""The sans-IO core: jobs, tubes, clients, the engine and its seams.

Nothing here imports asyncio, socket, os or time, nor any other layer of the package: time
comes from a ``clock.Clock``, persistence goes through a ``journal.Journal`` and process facts
for ``stats`` come from a ``host.Host``, all passed in by the shell.
"""

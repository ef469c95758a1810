"""The built-in web console: a JSON API under ``/api/`` and the page that uses it.

Nothing here touches the engine directly: everything the console reads or does goes through
a ``ConsoleBackend`` (``backend.py``), which the server shell implements next to its HTTP
hook (``beanstalk_py/shell/console_backend.py``). The package only needs the standard library, and
its static files (``static/``) ship inside the wheel.
"""

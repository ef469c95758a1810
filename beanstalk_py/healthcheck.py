"""``python -m beanstalk_py.healthcheck``: the path the image's HEALTHCHECK and the docs use.

The check itself is ``beanstalk_py.app.healthcheck``; this module only keeps the short name.
"""

from __future__ import annotations

import sys

from beanstalk_py.app.healthcheck import main

if __name__ == "__main__":
    sys.exit(main())

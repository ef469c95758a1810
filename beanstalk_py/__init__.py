"""beanstalk-py: a beanstalkd-compatible work-queue server."""

__version__ = "0.1.0"

"""Compatibility tests against the reference beanstalkd and real client libraries."""

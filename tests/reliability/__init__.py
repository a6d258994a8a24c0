"""Reliability and security scenarios (issue 7): each module is usable from tests and from
``python -m tests.reliability.report``, which reruns them with larger counts and writes RELIABILITY.md."""

"""Fixtures of the unit tests: `mgr`, a real manager in-process (see manager_inproc.py)."""
from manager_inproc import mgr  # noqa: F401 - the fixture, for every unit test module

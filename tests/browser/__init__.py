"""Browser tests. A package, so its conftest does not replace tests/conftest.py as the module
``conftest`` that other tests import helpers from."""

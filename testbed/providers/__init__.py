"""The providers that run the cells of an experiment, one package each; importing this
package imports them in `PACKAGES` order, and each registers itself
(`testbed.providers.registry`): that order is the order of `--testbed` choices."""

from importlib import import_module

from testbed.providers.base import Testbed
from testbed.providers.registry import Provider, get, make_testbed, names, register, unregister

PACKAGES = ("twin", "local", "openstack")

for _package in PACKAGES:
    import_module(f"{__name__}.{_package}")

__all__ = ["Provider", "Testbed", "get", "make_testbed", "names", "register", "unregister"]

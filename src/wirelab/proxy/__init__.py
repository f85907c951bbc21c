"""Proxies and balancers: the layer 4 (TCP) balancer `wirelab lb l4` (`l4`, `config`) and its kin.

Theory of operation: like `bench` and `demo`, this package imports nothing at import time, so the
commands' `--help` stays instant; import the modules themselves (`wirelab.proxy.l4`, ...).
"""

__all__: list[str] = []

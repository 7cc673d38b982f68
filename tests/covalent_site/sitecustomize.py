"""Loaded (via PYTHONPATH) only by the Covalent server that tests/test_covalent.py starts.

Covalent's server starts a dask LocalCluster without a dashboard address, and dask then
serves the dashboard on 0.0.0.0:8787. The test server must listen on loopback only: give
LocalCluster a loopback dashboard on a free port unless the caller chose one.
"""

import os

if os.environ.get("QFLEET_TEST_LOOPBACK_DASHBOARD") == "1":
    import functools

    from distributed.deploy import local as _local

    _init = _local.LocalCluster.__init__

    @functools.wraps(_init)
    def _loopback_init(self, *args, dashboard_address="127.0.0.1:0", **kwargs):
        _init(self, *args, dashboard_address=dashboard_address, **kwargs)

    _local.LocalCluster.__init__ = _loopback_init

"""The local stand-in for AWS (moto's server, patched) and helpers to run servers as child
processes: for `churn-worker local`, the tests and the benchmarks, never for the worker on AWS."""

from localaws.moto_patch import patch_moto_batch_statements, patch_moto_transactions
from localaws.server import ChildServer, main, start_moto

__all__ = ["ChildServer", "main", "patch_moto_batch_statements", "patch_moto_transactions", "start_moto"]

"""Moved to the `localaws` package (the moto patch and the local servers are not part of the
worker); these names stay importable for older imports and `python -m worker.localstack`."""

from __future__ import annotations

from localaws import ChildServer, main, patch_moto_transactions, start_moto

__all__ = ["ChildServer", "main", "patch_moto_transactions", "start_moto"]

if __name__ == "__main__":
    main()

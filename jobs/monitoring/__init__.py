"""Watching the model in production: the served-feature log (worker/served_log.py) against the
offline features (skew), the training distribution (drift) and the outcomes (calibration)."""

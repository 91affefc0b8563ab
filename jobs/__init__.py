"""Offline jobs, above the live service (`worker`) and the model library (`model`): backtest,
tune, replay, churn outcomes for the CLI, uplift, shadow comparison, rule evaluation, the
promotion gate, training with its held-out report, and the monthly retrain. `churn-worker run`
never loads any of this."""

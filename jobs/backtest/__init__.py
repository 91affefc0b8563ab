"""Backtests and threshold tuning: the live pipeline replayed in process, on event time.

`churn-worker backtest` runs `worker.pipeline.Pipeline` (the code `churn-worker run` runs) over an
event file with in-memory twins of every AWS port, the model in process (or a real endpoint), and a
simulated clock that follows the events, so windows, cooldowns and `as_of` are what they would have
been live. Its outputs are the alert bodies production would publish, a report against outcomes,
and the per-scoring-instant log that `churn-worker tune` sweeps thresholds on.

Modules: `clock` (the simulated clock), `source` (event files to event-time batches), `scorer`
(the model in process), `recording` (twins that also log what was scored), `fold` (one shard
through the pipeline), `rescoring` (day-end re-scoring), `runner` (the loop over shards), `metrics`
(alert metrics against outcomes), `report` (report.json). Threshold sweeps are `jobs.tuning`,
the HTML pages `jobs.html`.
"""

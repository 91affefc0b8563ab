"""One module per `churn-worker` subcommand; `worker.cli` parses arguments and dispatches here."""

"""One module per `churn-worker` subcommand; `cli.worker` parses arguments and dispatches here."""

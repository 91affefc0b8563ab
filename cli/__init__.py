"""The top floor: the two command-line tools (`churn-worker`: `cli.worker`, `churn-model`:
`cli.model`), their argument types (`argtypes`), one exit-code policy (`errors`) and one module
per `churn-worker` subcommand (`commands`). Parses arguments, builds settings once, calls down."""

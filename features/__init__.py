"""The domain: event schema, rolling-window maths, customer state, the feature registry, the
feature stores and due index, labels and churn outcomes, and the readers of event history (files,
directories, globs, S3). Imports `plumbing` only."""

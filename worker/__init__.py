"""The churn-alert worker: sources, pipeline, scoring client, alert routing, publishing, runtime, CLI."""

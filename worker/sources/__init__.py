"""Event sources: SQS and Kinesis adapters of worker.ports.EventSource."""

"""How `churn-worker run` wires its adapters: what a unit test can check without AWS."""

from __future__ import annotations


def test_a_kinesis_record_that_keeps_failing_has_a_dead_letter_queue_to_go_to() -> None:
    """FINDINGS.md #2: without a DLQ the Kinesis source retries such a record every 30 s forever."""
    from types import SimpleNamespace

    from worker.metrics import Metrics
    from worker.runtime import _source
    from worker.settings import Settings
    from worker.sources.sqs import SqsDeadLetterQueue

    settings = Settings(source="kinesis", kinesis_stream="s", dlq_url="https://sqs.example/123/dlq")
    aws = SimpleNamespace(kinesis=object(), dynamodb=object(), sqs=object())
    source = _source(settings, aws, Metrics())  # type: ignore[arg-type]
    assert isinstance(source._dead_letters, SqsDeadLetterQueue)  # type: ignore[attr-defined]

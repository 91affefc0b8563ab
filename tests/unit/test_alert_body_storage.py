"""The alert body as published and as a claim item keeps it: float32 values at float32 precision,
deflated with the frozen preset dictionary, bodies written before still read, and a realistic
claim item under 1 KB (1 write unit; 2 in the claim transaction)."""

from __future__ import annotations

import json
import random
import struct
import zlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from features.layout import item_bytes  # DynamoDB's item-size rules
from features.registry import FEATURE_NAMES
from worker.alerts.changes import LABELS, summary
from worker.alerts.config import AlertsConfig
from worker.alerts.dynamodb_alert_outcomes import (
    BODY_DICTIONARY,
    BODY_DICTIONARY_ID,
    decode_body,
    encode_body,
)
from worker.alerts.dynamodb_ledger import DynamoDBAlertLedger
from worker.alerts.rules import Alert, Change, Prediction, route_alerts


def float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def alerts(seed: int, customers: int) -> list[Alert]:
    """Alerts as the worker opens them: float32 model outputs as the endpoint's JSON carries them
    (float64 text of a float32), three changed inputs with their labels and the summary line."""
    rng = random.Random(seed)
    out = []
    for _ in range(customers):
        prediction = Prediction.from_json(
            {
                "first_session_success_prob": float(np.float32(rng.random())),
                "predicted_session_velocity": float(np.float32(rng.random() * 3)),
                "churn_risk_14d": float(np.float32(0.5 + rng.random() / 2)),
                "churn_risk_30d": float(np.float32(0.6 + rng.random() / 3)),
                "supply_demand_scores": [float(np.float32(rng.random())) for _ in range(20)],
                "customer_health_score": float(np.float32(rng.random() * 30)),
                "feature_importance": [
                    {"feature": rng.choice(FEATURE_NAMES), "importance": float(np.float32(rng.random()))}
                    for _ in range(5)
                ],
                "model_version": "2026-12-07-0f3a9c2e",
            }
        )
        features = {
            "ib_call_count_14d": float(rng.randint(3, 9)),
            "session_frequency_30d": 0.0,
            "has_first_session": 1.0,
        }
        now = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 10**6))
        customer = f"cust-{rng.randint(0, 10**9):010d}"
        for alert in route_alerts(
            customer, features, prediction, AlertsConfig(), now, customer_tier="premium", model_version=None
        ):
            changes = tuple(
                Change(
                    feature=name,
                    label=LABELS[name],
                    previous=round(rng.random() * 50, 4),
                    current=round(rng.random() * 50, 4),
                    share=round(rng.random(), 4),
                )
                for name in rng.sample(FEATURE_NAMES, 3)
            )
            before = float(np.float32(rng.random()))
            out.append(
                alert.with_window(now).model_copy(
                    update={
                        "changes": changes,
                        "previous_score_at": now - timedelta(days=2),
                        "previous_churn_probability": before,
                        "what_changed": summary(now - timedelta(days=2), now, changes, before, 0.9),
                    }
                )
            )
    return out


def test_the_dictionary_is_the_one_items_were_written_with() -> None:
    # A stored format: an edited file could not read the bodies written with the original.
    assert zlib.adler32(BODY_DICTIONARY) == BODY_DICTIONARY_ID


def test_a_body_reads_back_as_written() -> None:
    for alert in alerts(1, 20):
        body = alert.body()
        assert decode_body(encode_body(body)) == body


def test_bodies_written_before_still_read() -> None:
    body = alerts(2, 1)[0].body()
    text = json.dumps(body, separators=(",", ":"))
    assert decode_body({"B": zlib.compress(text.encode(), 6)}) == body  # deflate alone (the last format)
    assert decode_body({"S": text}) == body  # JSON text (the one before)


def test_body_floats_are_float32_at_their_shortest() -> None:
    alert = alerts(3, 1)[0]
    body = alert.body()
    assert alert.predictions is not None
    risk = alert.predictions.churn_risk_30d
    assert float32(body["churn_probability"]) == float32(risk)  # the same float32, nothing lost
    assert len(repr(body["churn_probability"])) <= 11  # "0.70011777", not "0.7001177072525024"
    scores = alert.predictions.supply_demand_scores
    for value, served in zip(body["predictions"]["supply_demand_scores"], scores, strict=True):
        assert float32(value) == float32(served) and len(repr(value)) <= 11


def test_a_stored_body_republishes_the_same_message() -> None:
    # The sweep re-publishes an abandoned claim from its stored body: the message must be the one the
    # first publish sent, byte for byte.
    for alert in alerts(4, 10):
        assert alert.window_start is not None
        stored = decode_body(encode_body(alert.body()))
        again = Alert.from_body(stored, alert.window_start, alert.customer_tier)
        assert json.dumps(again.body()) == json.dumps(alert.body())


def test_a_claim_item_fits_one_write_unit() -> None:
    ledger = DynamoDBAlertLedger(None, "churn-prod-alerts")  # type: ignore[arg-type]  # plans only, no calls
    sizes = []
    for alert in alerts(5, 60):
        assert alert.window_start is not None
        put = ledger._claim_put(alert, alert.window_start, timedelta(days=7), "f" * 32)
        sizes.append(item_bytes(put["Put"]["Item"]))
    assert max(sizes) <= 1024, f"claim items of {max(sizes)} bytes: 2 write units each"
    # ... with room to spare for longer customer ids and messages than these
    assert np.mean(sizes) <= 950


@pytest.mark.parametrize("value", [0.0, 1.0, 1e-8, 0.1, 0.7001177072525024, 99.99999, 1e30, -3.25, 123456.78])
def test_shortest_float32_text_is_exact_and_stable(value: float) -> None:
    from worker.alerts.rules import _shortest_float32

    short = _shortest_float32(value)
    assert float32(short) == float32(value)
    assert _shortest_float32(short) == short


def test_a_value_beyond_float32_stays_as_it_is() -> None:
    from worker.alerts.rules import _shortest_float32

    assert _shortest_float32(1e300) == 1e300

"""Examples from an event log: the daily scoring instants of active customers, built with the
worker's feature code, point in time (no feature sees a later event), duplicates once, honest
splits, and one-line errors for bad input."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from features.activity import day_end_us
from features.events import validate_event
from features.registry import compute_features_batch
from features.state import DAY_US, from_us, to_us
from features.store import MemoryFeatureStore
from model.exceptions import DataError
from model.owndata import BuildOptions, build_examples

START = datetime(2026, 1, 1, tzinfo=UTC)
DAY0 = to_us(START) // DAY_US


def event(cid: str, kind: str, day: float, n: int, **fields: object) -> dict[str, object]:
    moment = START + timedelta(days=day)
    return {
        "event_id": f"{cid}-{n}",
        "customer_id": cid,
        "type": kind,
        "occurred_at": moment.isoformat().replace("+00:00", "Z"),
        **fields,
    }


def hand_made_log() -> list[dict[str, object]]:
    """c1: signs up on day 0, logs in daily, churns on day 46.5. c2: no sign-up (a customer from
    before the log), logins on days 0-5 only, so inactive 35 days later. c3: keeps the log going to
    day 90, completes sessions."""
    events = [event("c1", "customer_signed_up", 0.1, 0, tier="standard")]
    events += [event("c1", "login", d + 0.5, d + 1) for d in range(46)]
    events.append(event("c1", "customer_churned", 46.5, 99))
    events += [event("c2", "login", d + 0.3, d) for d in range(6)]
    events.append(event("c3", "customer_signed_up", 0.2, 0, tier="premium"))
    events += [
        event(
            "c3", "session_completed", d + 0.6, d + 1, subject="algebra", tutor_id="t1", duration_minutes=60.0
        )
        for d in range(0, 91, 3)
    ]
    return events


def write(path: Path, events: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def outcomes(path: Path, rows: dict[str, str | None]) -> Path:
    path.write_text("".join(json.dumps({"customer_id": c, "churned_at": t}) + "\n" for c, t in rows.items()))
    return path


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, Path]:
    return write(tmp_path / "events.jsonl", hand_made_log()), outcomes(
        tmp_path / "outcomes.jsonl", {"c1": "2026-02-16T12:00:00Z", "c2": None, "c3": None}
    )


def evaluation(events: Path | str, out: Path, **options: object) -> tuple[object, object]:
    return build_examples(str(events), out, BuildOptions(mode="evaluation", **options), say=lambda m: None)  # type: ignore[arg-type]


def rows_of(examples: object, customer: str) -> list[int]:
    mask = examples.customer == customer  # type: ignore[attr-defined]
    return sorted(((examples.t_us[mask] + 1) // DAY_US - 1 - DAY0).tolist())  # type: ignore[attr-defined]


def test_rows_are_day_end_instants_of_every_active_customer(log: tuple[Path, Path]) -> None:
    examples, report = evaluation(*log)
    assert ((examples.t_us + 1) % DAY_US == 0).all()  # the last microsecond of a UTC day
    assert rows_of(examples, "c1") == list(range(46))  # churned on day 46: not active at its end
    assert rows_of(examples, "c2") == list(range(40))  # latest event day 5.3: 35 days later is in day 40
    assert rows_of(examples, "c3") == list(range(91))
    assert report.end_us == max(to_us(datetime.fromisoformat(str(e["occurred_at"]))) for e in hand_made_log())


def test_features_see_exactly_the_events_up_to_their_instant(log: tuple[Path, Path], tmp_path: Path) -> None:
    examples, _ = evaluation(*log)
    events = [validate_event(e) for e in hand_made_log()]
    for day in (0, 3, 20, 45):
        at = day_end_us(DAY0 + day)
        store = MemoryFeatureStore()
        states = store.apply_sync([e for e in events if to_us(e.occurred_at) <= at], now=from_us(at)).states
        expected = compute_features_batch([states["c1"], states["c3"]], from_us(at)).astype(np.float32)
        for row, cid in enumerate(("c1", "c3")):
            mine = np.flatnonzero((examples.customer == cid) & (examples.t_us == at))
            np.testing.assert_array_equal(examples.x[mine[0]], expected[row])
    # an event after an instant changes nothing at that instant
    later = write(
        tmp_path / "later.jsonl", [*hand_made_log(), event("c3", "ib_call", 30.5, 500, sentiment="negative")]
    )
    with_call, _ = evaluation(later, log[1])
    before = with_call.t_us < day_end_us(DAY0 + 30)
    np.testing.assert_array_equal(with_call.x[before], examples.x[examples.t_us < day_end_us(DAY0 + 30)])
    assert not np.array_equal(with_call.x[~before], examples.x[examples.t_us >= day_end_us(DAY0 + 30)])


def test_labels_look_only_after_the_instant(log: tuple[Path, Path]) -> None:
    examples, _ = evaluation(*log)
    c1 = examples.customer == "c1"
    day = (examples.t_us[c1] + 1) // DAY_US - 1 - DAY0
    churn14 = examples.y["churn_risk_14d"][c1]
    # the churn is on day 46.5: positive from the end of day 32 (14 days before) to day 45, not before
    assert churn14[day < 32].max() == 0 and churn14[(day >= 32) & (day <= 45)].min() == 1


def test_duplicates_and_file_order_do_not_change_the_examples(log: tuple[Path, Path], tmp_path: Path) -> None:
    shuffled = hand_made_log()
    np.random.default_rng(3).shuffle(shuffled)
    twice = tmp_path / "twice"
    twice.mkdir()
    write(twice / "a.jsonl", shuffled)
    with gzip.open(twice / "b.jsonl.gz", "wt") as handle:  # every event delivered again, in another file
        handle.writelines(json.dumps(e) + "\n" for e in shuffled)
    again, _ = evaluation(twice, log[1])
    examples, _ = evaluation(*log)
    order, other = np.lexsort((examples.t_us, examples.customer)), np.lexsort((again.t_us, again.customer))
    np.testing.assert_array_equal(examples.x[order], again.x[other])
    assert again.summary["duplicates_dropped"] == len(hand_made_log())


def test_an_outcomes_churn_without_an_event_ends_the_customers_instants(tmp_path: Path) -> None:
    events = [e for e in hand_made_log() if e["type"] != "customer_churned"]
    examples, _ = evaluation(
        write(tmp_path / "e.jsonl", events), outcomes(tmp_path / "o.jsonl", {"c1": "2026-01-21T12:00:00Z"})
    )
    assert rows_of(examples, "c1") == list(range(20))  # gone from the end of day 20 on


def test_training_split_is_out_of_time_and_out_of_customer(tmp_path: Path) -> None:
    from model.altsim import generate, write_log

    paths = write_log(generate(400, 75, 3), tmp_path / "alt")
    examples, report = build_examples(
        str(paths["events"]), paths["outcomes"], BuildOptions(max_train_rows=3000), say=lambda m: None
    )
    roles = {role: set(examples.customer[examples.role == role]) for role in ("train", "validation", "test")}
    assert all(roles.values())
    assert not roles["train"] & roles["validation"] and not roles["train"] & roles["test"]
    # training customers at every instant, flagged: the earlier-instants member reads those before the cut
    assert examples.where("train").after_cut.any() and not examples.where("train").after_cut.all()
    assert examples.where("validation").after_cut.all()  # later instants of other customers
    assert (
        examples.where("test").after_cut.any() and not examples.where("test").after_cut.all()
    )  # both readings
    assert (
        report.every["train"] >= 1 and report.summary["duplicates_dropped"] > 0
    )  # altsim delivers some twice
    # held out: the customers who appeared last (new customers are who the model meets next)
    from features.eventfile import event_sources, read_events

    first_seen: dict[str, int] = {}
    for record in read_events(event_sources(paths["events"])):
        t = to_us(record.item.occurred_at)  # type: ignore[union-attr]
        first_seen[record.item.customer_id] = min(t, first_seen.get(record.item.customer_id, t))  # type: ignore[union-attr]
    assert max(first_seen[c] for c in roles["train"]) <= min(
        first_seen[c] for c in roles["validation"] | roles["test"]
    )
    assert len(examples.where("train")) <= 3000 * 1.5


def test_unknown_outcome_ids_are_refused_unless_allowed(log: tuple[Path, Path], tmp_path: Path) -> None:
    extra = outcomes(tmp_path / "o.jsonl", {"c1": None, "zz-9": None, "zz-8": "2026-01-05T00:00:00Z"})
    with pytest.raises(DataError, match=r"2 of 3 customers never appear in the events \(e.g. zz-8, zz-9\)"):
        evaluation(log[0], extra)
    examples, report = evaluation(log[0], extra, allow_unknown_outcomes=True)
    assert len(examples) and report.warnings


def test_a_churn_before_sign_up_is_refused(log: tuple[Path, Path], tmp_path: Path) -> None:
    early = outcomes(tmp_path / "o.jsonl", {"c3": "2025-12-01T00:00:00Z"})
    with pytest.raises(DataError, match="churned before they signed up"):
        evaluation(log[0], early)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the log is empty"),
        ("not json\n", "the log is empty"),
        (json.dumps(event("c1", "login", 0, 1)) + "\n", "needs at least"),
    ],
)
def test_empty_short_or_unreadable_logs_are_refused(tmp_path: Path, content: str, message: str) -> None:
    empty = outcomes(tmp_path / "o.jsonl", {})
    with pytest.raises(DataError, match=message):
        evaluation(
            write(tmp_path / "e.jsonl", []) if not content else _text(tmp_path / "e.jsonl", content), empty
        )


def test_a_torn_gzip_is_a_one_line_error(tmp_path: Path) -> None:
    torn = tmp_path / "e.jsonl.gz"
    torn.write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:50])
    with pytest.raises(DataError, match="unreadable"):
        evaluation(torn, outcomes(tmp_path / "o.jsonl", {}))


def _text(path: Path, content: str) -> Path:
    path.write_text(content)
    return path


@pytest.mark.parametrize("shards", [2, 8])
def test_the_number_of_shards_does_not_change_the_examples(log: tuple[Path, Path], shards: int) -> None:
    one, _ = evaluation(*log, shards=1)
    many, _ = evaluation(*log, shards=shards)
    a, b = np.lexsort((one.t_us, one.customer)), np.lexsort((many.t_us, many.customer))
    np.testing.assert_array_equal(one.x[a], many.x[b])
    for name in one.y:
        np.testing.assert_array_equal(one.y[name][a], many.y[name][b])

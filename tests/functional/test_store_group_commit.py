"""The feature store writes a batch's customers together: one TransactWriteItems for many of them
(the writes of several items; a write of one item is a conditional PutItem of its own, and the
transaction tests here turn that off, `single_item_puts=False`, to put every write in them).
A transaction is all or nothing, so one customer's lost race cancels it for all: these tests race
writers on moto's DynamoDB and, where moto cannot produce what DynamoDB does (a transaction
conflict, throttling reasons, an answer lost after the commit), inject it into the client's
answers, and check that every event is counted exactly once. The PutItem path gets the same
races and faults at the end."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, ReadTimeoutError

from features.dynamodb import DynamoDBFeatureStore, create_feature_table, table_name
from features.events import Event, validate_event
from features.state import event_digest
from localaws.moto_patch import plan_statement

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def event(n: int, customer: str, days_ago: float = 0.5) -> Event:
    when = (NOW - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return validate_event(
        {
            "event_id": f"e-{n}",
            "customer_id": customer,
            "type": "ib_call",
            "sentiment": "negative",
            "occurred_at": when,
        }
    )


@pytest.fixture
async def table(aws_endpoint: str, unique_prefix: str) -> str:
    name = table_name(unique_prefix)
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        await create_feature_table(client, name)
    return name


async def check_counted_once(store: DynamoDBFeatureStore, events: list[Event]) -> None:
    expected: dict[str, Counter[bytes]] = {}
    for e in events:
        expected.setdefault(e.customer_id, Counter())[event_digest(e.event_id)] = 1
    states = await store.get(sorted(expected))
    for cid, digests in expected.items():
        state = states[cid]
        stored = Counter(d for page in state.pages.values() for d in page.event_digests)
        assert stored == digests, cid  # none lost, none twice
        assert state.profile.lifetime["ib_calls"] == len(digests) == state.profile.lifetime["negative_calls"]
        assert sum(page.counts["n.ib_call"] for page in state.pages.values()) == len(digests)


@pytest.mark.parametrize("single_item_puts", [False, True])
async def test_two_workers_racing_on_the_same_customers_count_every_event_once(
    table: str, single_item_puts: bool
) -> None:
    """Two workers, each with its own client, write overlapping batches of the same 60 customers
    at once (as after a visibility timeout or a lease takeover): each batch a transaction of many
    customers, so their races cancel whole transactions and fall back customer by customer. With
    single-item puts, most writes race as PutItems, the rolls (several items) in transactions."""
    rng = random.Random(14)
    events = [event(n, f"c-{rng.randrange(60)}", days_ago=rng.uniform(0, 30)) for n in range(1_500)]
    session = get_session()
    async with (
        session.create_client("dynamodb", region_name="us-east-1") as one,
        session.create_client("dynamodb", region_name="us-east-1") as two,
    ):
        first = DynamoDBFeatureStore(one, table, single_item_puts=single_item_puts)
        second = DynamoDBFeatureStore(two, table, single_item_puts=single_item_puts)

        async def worker(store: DynamoDBFeatureStore, order: list[Event], size: int) -> None:
            for start in range(0, len(order), size):
                await store.apply(order[start : start + size], NOW)

        shuffled = events[:]
        rng.shuffle(shuffled)
        await asyncio.gather(worker(first, events, 100), worker(second, shuffled, 70))
        await check_counted_once(first, events)
        if single_item_puts:
            # one-item writes raced as PartiQL statements (25 to a request), rolls in transactions
            assert (
                first.requests["BatchExecuteStatement"] > 0 and second.requests["BatchExecuteStatement"] > 0
            )
            return
        # Far fewer transactions than customer-batches: they were written together.
        customer_batches = sum(
            len({e.customer_id for e in events[i : i + 100]}) for i in range(0, 1_500, 100)
        )
        # How many races are lost depends on the interleaving (each loser retries alone): 120-200 seen.
        assert first.requests["TransactWriteItems"] < customer_batches / 2


async def test_one_workers_concurrent_batches_take_turns_instead_of_racing(table: str) -> None:
    """Batches in flight at once in one worker (the runtime runs several) share customers: they
    take turns on those, so none of their transactions is cancelled by the other."""
    rng = random.Random(7)
    batches = [[event(b * 100 + n, f"c-{rng.randrange(30)}") for n in range(20)] for b in range(6)]
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        interfering = Interfering(client)
        store = DynamoDBFeatureStore(interfering, table, single_item_puts=False)  # type: ignore[arg-type]
        await asyncio.gather(*(store.apply(batch, NOW) for batch in batches))
        assert store.requests["TransactWriteItems"] == len(batches)  # none cancelled, none retried
        await check_counted_once(store, [e for batch in batches for e in batch])


def statement_customer(stmt: dict[str, Any]) -> str:
    """The customer a feature store PartiQL statement writes (features/layout.py's two shapes)."""
    plan = plan_statement(stmt)
    assert plan is not None, stmt["Statement"]
    return str(plan["item" if plan["kind"] == "insert" else "where"]["customer_id"]["S"])


async def send_as_is(client: Any, request: dict[str, Any]) -> Any:
    """What the store sent, to moto: a PutItem or a BatchExecuteStatement."""
    if "Statements" in request:
        return await client.batch_execute_statement(**request)
    return await client.put_item(**request)


class Interfering:
    """A DynamoDB client whose first TransactWriteItems is preceded by `before` (another writer's
    commit) or answered by `answer` (a fault) instead of DynamoDB."""

    def __init__(self, client: Any, before: Any = None, answer: Any = None) -> None:
        self._client = client
        self._before = before
        self._answer = answer
        self.transactions: list[list[str]] = []  # the customers of each transaction sent
        self.puts: list[str] = []  # the customer of each one-item write sent (PutItem or statement)
        self.batches: list[list[str]] = []  # the customers of each BatchExecuteStatement sent

    async def _send(self, kwargs: dict[str, Any], forward: Any) -> Any:
        """The first request sent runs `before` first, or is answered by `answer`; the rest go on."""
        if self._before is not None:
            before, self._before = self._before, None
            await before()
        if self._answer is not None:
            answer, self._answer = self._answer, None
            return await answer(kwargs)
        return await forward(**kwargs)

    async def put_item(self, **kwargs: Any) -> Any:
        self.puts.append(kwargs["Item"]["customer_id"]["S"])
        return await self._send(kwargs, self._client.put_item)

    async def batch_execute_statement(self, **kwargs: Any) -> Any:
        customers = [statement_customer(stmt) for stmt in kwargs["Statements"]]
        self.batches.append(customers)
        self.puts.extend(customers)
        return await self._send(kwargs, self._client.batch_execute_statement)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **kwargs: Any) -> Any:
        self.transactions.append(
            sorted({a["Put"]["Item"]["customer_id"]["S"] for a in kwargs["TransactItems"]})
        )
        return await self._send(kwargs, self._client.transact_write_items)


async def test_a_lost_race_cancels_the_transaction_and_only_the_loser_retries_alone(table: str) -> None:
    """On moto: another writer commits one customer of our transaction first; DynamoDB cancels it
    naming that customer's item; the others are written together again, the loser alone, from a
    fresh read, and nothing is counted twice."""
    customers = [f"c-{n}" for n in range(10)]
    batch = [event(n, cid) for n, cid in enumerate(customers)] + [event(50, "c-3")]
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        other = DynamoDBFeatureStore(client, table)

        async def other_commits() -> None:
            await other.apply([event(100, "c-3"), batch[3]], NOW)  # c-3's event too: a redelivery elsewhere

        interfering = Interfering(client, before=other_commits)
        store = DynamoDBFeatureStore(interfering, table, single_item_puts=False)  # type: ignore[arg-type]
        result = await store.apply(batch, NOW)
        assert interfering.transactions[0] == customers
        assert sorted(interfering.transactions[1:]) == [[c for c in customers if c != "c-3"], ["c-3"]]
        assert result.duplicates == ["e-3"] and len(result.applied) == 10
        await check_counted_once(store, [*batch, event(100, "c-3")])


def cancelled(reasons: list[str]) -> ClientError:
    message = f"Transaction cancelled, please refer cancellation reasons for specific reasons [{', '.join(reasons)}]"
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": message},
            "CancellationReasons": [{"Code": r} for r in reasons],
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "TransactWriteItems",
    )


@pytest.mark.parametrize(
    "reason", ["TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"]
)
async def test_conflicts_and_throttling_on_one_item_are_retried_until_written(
    table: str, reason: str
) -> None:
    """What moto never answers: DynamoDB cancels a transaction for a conflict with another
    transaction, or for throttling, on one customer's item."""
    batch = [event(n, f"c-{n}") for n in range(5)]

    async def refuse(request: dict[str, Any]) -> Any:
        raise cancelled([reason if i == 2 else "None" for i in range(len(request["TransactItems"]))])

    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        interfering = Interfering(client, answer=refuse)
        store = DynamoDBFeatureStore(interfering, table, single_item_puts=False)  # type: ignore[arg-type]
        result = await store.apply(batch, NOW)
        assert sorted(result.applied) == sorted(e.event_id for e in batch)
        assert sorted(interfering.transactions[1:]) == [["c-0", "c-1", "c-3", "c-4"], ["c-2"]]
        await check_counted_once(store, batch)


async def test_an_answer_lost_after_the_commit_is_read_back_not_written_twice(table: str) -> None:
    """The transaction is applied but its answer never arrives (a timeout, a reset connection): the
    store reads again, finds the events counted, and writes nothing more."""
    batch = [event(n, f"c-{n % 4}") for n in range(12)]
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:

        async def commit_then_lose_the_answer(request: dict[str, Any]) -> Any:
            await client.transact_write_items(**request)
            raise ReadTimeoutError(endpoint_url="http://dynamodb")

        interfering = Interfering(client, answer=commit_then_lose_the_answer)
        store = DynamoDBFeatureStore(interfering, table, single_item_puts=False)  # type: ignore[arg-type]
        result = await store.apply(batch, NOW)
        assert len(interfering.transactions) == 1  # nothing left to write after the re-read
        assert sorted(result.duplicates) == sorted(
            e.event_id for e in batch
        )  # counted by the lost answer's commit
        await check_counted_once(store, batch)


async def test_a_malformed_customer_write_fails_the_batch_with_its_name(table: str) -> None:
    """A refusal (ValidationException) of a shared transaction is retried customer by customer, so
    the error names the one customer whose write DynamoDB refuses."""
    batch = [event(n, f"c-{n}") for n in range(3)]
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:

        class Refusing(Interfering):
            async def transact_write_items(self, **kwargs: Any) -> Any:
                if any(a["Put"]["Item"]["customer_id"]["S"] == "c-1" for a in kwargs["TransactItems"]):
                    raise ClientError(
                        {
                            "Error": {"Code": "ValidationException", "Message": "Item size too large"},
                            "ResponseMetadata": {"HTTPStatusCode": 400},
                        },
                        "TransactWriteItems",
                    )
                return await super().transact_write_items(**kwargs)

        store = DynamoDBFeatureStore(Refusing(client), table, single_item_puts=False)  # type: ignore[arg-type]
        with pytest.raises(Exception, match=r"customer c-1.*Item size too large"):
            await store.apply(batch, NOW)


# -- single-item writes: conditional PutItems --------------------------------------------------


async def test_a_lost_race_on_a_single_item_put_is_read_again_and_only_that_customer_retried(
    table: str,
) -> None:
    """Each new customer's write is its profile alone: a conditional PutItem. Another writer
    commits c-3 first; c-3's put fails its condition (nobody else's is affected), c-3 is read
    again and written from there, and nothing is counted twice."""
    customers = [f"c-{n}" for n in range(10)]
    batch = [event(n, cid) for n, cid in enumerate(customers)] + [event(50, "c-3")]
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        other = DynamoDBFeatureStore(client, table)

        async def other_commits() -> None:
            await other.apply([event(100, "c-3"), batch[3]], NOW)

        interfering = Interfering(client)
        store = DynamoDBFeatureStore(interfering, table, batch_statements=False)  # type: ignore[arg-type]
        original = interfering.put_item

        async def put_item(**kwargs: Any) -> Any:  # the race lands just before c-3's put
            if kwargs["Item"]["customer_id"]["S"] == "c-3" and interfering.puts.count("c-3") == 0:
                await other_commits()
            return await original(**kwargs)

        interfering.put_item = put_item  # type: ignore[method-assign]
        result = await store.apply(batch, NOW)
        assert sorted(interfering.puts) == sorted([*customers, "c-3"])  # c-3 twice, the rest once
        assert interfering.transactions == [] and store.requests["TransactWriteItems"] == 0
        assert result.duplicates == ["e-3"] and len(result.applied) == 10
        await check_counted_once(store, [*batch, event(100, "c-3")])


async def test_a_lost_race_inside_a_statement_batch_is_read_again_and_only_that_customer_retried(
    table: str,
) -> None:
    """The same race on the default path: ten customers' writes in one BatchExecuteStatement,
    another writer commits c-3 (then c-5, already written before) between our read and our batch:
    c-3's INSERT answers DuplicateItem and c-5's UPDATE ConditionalCheckFailed, the other eight
    are written, and only those two go round again, in a batch of their own."""
    customers = [f"c-{n}" for n in range(10)]
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        other = DynamoDBFeatureStore(client, table)
        await other.apply([event(200, "c-5")], NOW)
        batch = [event(n, cid) for n, cid in enumerate(customers)]

        async def other_commits() -> None:
            await other.apply([event(100, "c-3"), event(101, "c-5")], NOW)

        interfering = Interfering(client, before=other_commits)
        store = DynamoDBFeatureStore(interfering, table)  # type: ignore[arg-type]
        result = await store.apply(batch, NOW)
        assert interfering.batches == [customers, ["c-3", "c-5"]]
        assert store.requests["PutItem"] == 0 and store.requests["TransactWriteItems"] == 0
        assert len(result.applied) == 10
        await check_counted_once(store, [*batch, event(100, "c-3"), event(101, "c-5"), event(200, "c-5")])


@pytest.mark.parametrize("batch_statements", [True, False])
async def test_an_answer_lost_after_a_put_is_read_back_not_written_twice(
    table: str, batch_statements: bool
) -> None:
    batch = [event(n, "c-0") for n in range(3)]
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:

        async def commit_then_lose_the_answer(request: dict[str, Any]) -> Any:
            await send_as_is(client, request)
            raise ReadTimeoutError(endpoint_url="http://dynamodb")

        interfering = Interfering(client, answer=commit_then_lose_the_answer)
        store = DynamoDBFeatureStore(interfering, table, batch_statements=batch_statements)  # type: ignore[arg-type]
        result = await store.apply(batch, NOW)
        assert interfering.puts == ["c-0"]  # nothing left to write after the re-read
        assert sorted(result.duplicates) == sorted(e.event_id for e in batch)
        await check_counted_once(store, batch)


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError"]
)
@pytest.mark.parametrize("batch_statements", [True, False])
async def test_a_throttled_or_failed_put_is_retried_until_written(
    table: str, code: str, batch_statements: bool
) -> None:
    batch = [event(n, f"c-{n}") for n in range(3)]

    async def refuse(request: dict[str, Any]) -> Any:
        raise ClientError(
            {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": 400}},
            "BatchExecuteStatement" if "Statements" in request else "PutItem",
        )

    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        interfering = Interfering(client, answer=refuse)
        store = DynamoDBFeatureStore(interfering, table, batch_statements=batch_statements)  # type: ignore[arg-type]
        result = await store.apply(batch, NOW)
        assert sorted(result.applied) == sorted(e.event_id for e in batch)
        if batch_statements:  # the whole batch refused, written again whole after a fresh read
            assert interfering.batches == [["c-0", "c-1", "c-2"], ["c-0", "c-1", "c-2"]]
        else:
            assert len(interfering.puts) == 4  # one refused, written again after a fresh read
        await check_counted_once(store, batch)


@pytest.mark.parametrize(
    ("code", "retried"),
    [("ConditionalCheckFailed", True), ("ThrottlingError", True), ("ValidationError", False)],
)
async def test_one_refused_statement_costs_only_its_customer(table: str, code: str, retried: bool) -> None:
    """BatchExecuteStatement answers each statement on its own: one refused statement (its
    condition failed, it was throttled) sends only that customer round again, from a fresh read;
    one refused as invalid is written again at once as a PutItem."""
    customers = [f"c-{n}" for n in range(6)]
    batch = [event(n, cid) for n, cid in enumerate(customers)]
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:

        async def refuse_the_third(request: dict[str, Any]) -> Any:
            statements = request["Statements"]
            answer = await client.batch_execute_statement(Statements=statements[:2] + statements[3:])
            answers = list(answer["Responses"])
            answers.insert(2, {"TableName": table, "Error": {"Code": code, "Message": code}})
            return {**answer, "Responses": answers}

        interfering = Interfering(client, answer=refuse_the_third)
        store = DynamoDBFeatureStore(interfering, table)  # type: ignore[arg-type]
        result = await store.apply(batch, NOW)
        assert len(result.applied) == 6
        if retried:
            assert interfering.batches == [customers, ["c-2"]]
        else:
            assert interfering.batches == [customers] and store.requests["PutItem"] == 1
        await check_counted_once(store, batch)


async def test_a_roll_of_pages_into_a_segment_is_still_one_transaction(table: str) -> None:
    """Only a write of one item is a PutItem: a customer whose profile grew past PROFILE_ROLL_AT
    writes its profile and a new segment, which must land together, in a transaction."""
    batch = [event(n, "busy", days_ago=n * 0.3 + 0.1) for n in range(90)]
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        interfering = Interfering(client)
        store = DynamoDBFeatureStore(interfering, table)  # type: ignore[arg-type]
        for start in range(0, len(batch), 3):
            await store.apply(batch[start : start + 3], NOW)
        assert (
            interfering.puts and interfering.transactions
        )  # profile alone: puts; with a segment: a transaction
        await check_counted_once(store, batch)

"""One owner for AWS client lifetimes: every aiobotocore client is opened in one AsyncExitStack.

Endpoints come from botocore's standard chain (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`),
so the same code talks to AWS, to moto's server, or to the local model endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_kinesis.client import KinesisClient
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_sagemaker_runtime.client import SageMakerRuntimeClient
    from types_aiobotocore_sns.client import SNSClient
    from types_aiobotocore_sqs.client import SQSClient

# Standard retry mode: exponential backoff with jitter on throttling and 5xx, bounded attempts.
# No client-side parameter validation: botocore walks every request against the service model
# before sending it (~0.08 ms per DynamoDB item, a few % of the worker's CPU, bench/bench_cost.py
# --profile); the requests are typed (types-aiobotocore, mypy) and the service validates them anyway,
# answering ValidationException, which plumbing/retry.py classifies as invalid (a client-side
# ParamValidationError would have looked like a transient failure and been retried).
CLIENT_CONFIG = AioConfig(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=64,
    parameter_validation=False,
)
SHADOW_RUNTIME = "sagemaker-runtime-shadow"  # the shadow endpoint's own SageMaker runtime client
# The scoring client retries itself (with a circuit breaker), so botocore must not retry under it;
# it also bounds each attempt itself (worker/scoring.py: 10 s warm, 60 s while the endpoint may be
# cold), so the socket's read timeout only has to outlast SageMaker's 60 s invocation limit.
SERVICE_CONFIGS = {
    "sagemaker-runtime": AioConfig(
        retries={"mode": "standard", "max_attempts": 1},
        connect_timeout=3,
        read_timeout=65,
        max_pool_connections=16,
        parameter_validation=False,
    ),
    # The shadow model's client: a pool of its own, so a slow shadow endpoint holding connections
    # never makes a live call wait for one (worker/shadow.py bounds each call's time itself).
    SHADOW_RUNTIME: AioConfig(
        retries={"mode": "standard", "max_attempts": 1},
        connect_timeout=3,
        read_timeout=30,
        max_pool_connections=8,
        parameter_validation=False,
    ),
}
# Clients opened under a name of their own: the name -> the AWS service.
SERVICE_OF = {SHADOW_RUNTIME: "sagemaker-runtime"}


class AwsClients:
    """`async with AwsClients(region, "dynamodb", "sqs") as aws: aws.dynamodb...`: each client
    typed with its types-aiobotocore stub, so strict mypy checks every call made on it.
    `on_request(service, operation)`, when given, is called for every HTTP request sent (retries
    included): the worker counts them in its metrics."""

    def __init__(
        self, region: str | None, *services: str, on_request: Callable[[str, str], None] | None = None
    ) -> None:
        self._region = region
        self._services = services
        self._on_request = on_request
        self._stack = AsyncExitStack()
        self._clients: dict[str, Any] = {}

    async def __aenter__(self) -> AwsClients:
        session = get_session()
        for service in self._services:
            client = await self._stack.enter_async_context(
                session.create_client(  # type: ignore[call-overload]  # service names are checked by botocore
                    SERVICE_OF.get(service, service),
                    region_name=self._region,
                    config=SERVICE_CONFIGS.get(service, CLIENT_CONFIG),
                )
            )
            if self._on_request is not None:
                client.meta.events.register("before-send", self._count)
            self._clients[service] = client
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def _count(self, event_name: str = "", **_kwargs: Any) -> None:
        # event_name is "before-send.<service>.<Operation>"; retries are sent, so they count too
        _, service, operation = ([*event_name.split(".", 2), "", ""])[:3]
        assert self._on_request is not None
        self._on_request(service, operation)

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            raise KeyError(f"AwsClients opened without {service!r}; pass it to AwsClients(region, ...)")
        return self._clients[service]

    @property
    def dynamodb(self) -> DynamoDBClient:
        return cast("DynamoDBClient", self._client("dynamodb"))

    @property
    def sqs(self) -> SQSClient:
        return cast("SQSClient", self._client("sqs"))

    @property
    def sns(self) -> SNSClient:
        return cast("SNSClient", self._client("sns"))

    @property
    def sagemaker_runtime(self) -> SageMakerRuntimeClient:
        return cast("SageMakerRuntimeClient", self._client("sagemaker-runtime"))

    @property
    def kinesis(self) -> KinesisClient:
        return cast("KinesisClient", self._client("kinesis"))

    @property
    def s3(self) -> S3Client:
        return cast("S3Client", self._client("s3"))

    @property
    def sagemaker_runtime_shadow(self) -> SageMakerRuntimeClient:
        """A second SageMaker runtime client, for the shadow endpoint (`SHADOW_RUNTIME`)."""
        return cast("SageMakerRuntimeClient", self._client(SHADOW_RUNTIME))

"""moto's server, made to behave like SageMaker where the journey test (tests/e2e/test_journey.py)
depends on it.

`python -m tests.e2e.sagemaker_emu [--port N]` prints `listening on URL` like `python -m localaws`
(its transaction patch included), plus what moto's SageMaker does differently from AWS:

- **Names**: CloudFormation gives a model, an endpoint config and an endpoint the `ModelName`,
  `EndpointConfigName` and `EndpointName` the template sets; moto ignores them and generates
  `STACK-LogicalId-RANDOM`, so the names the retraining role is allowed to describe could not be
  checked against what the template really creates.
- **Network isolation**: moto drops `EnableNetworkIsolation` (every model describes as `false`), from
  CreateModel and from the template alike; here a model keeps it.
- **UpdateEndpoint**: moto has none. Here it moves the endpoint to the new config at once (AWS does
  it blue/green, then InService), and sets each variant's desired instance count and weight from the
  new config, unless `RetainAllVariantProperties` keeps the current ones (less the properties named
  in `ExcludeRetainedVariantProperties`), as AWS documents.

And what moto's SQS does slower than AWS by the length of the queue, which a replayed history
makes quadratic (minutes for a few thousand events):

- **A send, and each message received, cost the queue's length**: every SendMessage builds all of
  the queue's attributes to read one (ContentBasedDeduplication), and every message received does
  so three times over to read its retention period, each time counting every message in the queue
  three times (visible, in flight, delayed). Here they read the one attribute they need.

Everything else is moto as it is.
"""

from __future__ import annotations

import argparse
import threading
from typing import Any


def patch_moto_sagemaker() -> None:
    from moto.sagemaker import models, responses

    if getattr(responses.SageMakerResponse, "_journey_patched", False):
        return
    responses.SageMakerResponse._journey_patched = True  # type: ignore[attr-defined]

    models.Model.cloudformation_name_type = staticmethod(lambda: "ModelName")  # type: ignore[method-assign]
    models.FakeEndpointConfig.cloudformation_name_type = staticmethod(  # type: ignore[method-assign]
        lambda: "EndpointConfigName"
    )
    models.FakeEndpoint.cloudformation_name_type = staticmethod(lambda: "EndpointName")  # type: ignore[method-assign]

    create_model = responses.SageMakerResponse.create_model

    def create_model_keeping_isolation(self: Any) -> Any:
        result = create_model(self)
        model = self.sagemaker_backend._models[self._get_param("ModelName")]
        model.enable_network_isolation = bool(self._get_param("EnableNetworkIsolation", False))
        return result

    responses.SageMakerResponse.create_model = create_model_keeping_isolation  # type: ignore[method-assign]

    from_template = models.Model.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def model_from_template(
        cls: Any, resource_name: str, cloudformation_json: Any, *args: Any, **kw: Any
    ) -> Any:
        model = from_template(cls, resource_name, cloudformation_json, *args, **kw)
        isolation = cloudformation_json["Properties"].get("EnableNetworkIsolation", False)
        model.enable_network_isolation = str(isolation).lower() == "true"
        return model

    models.Model.create_from_cloudformation_json = classmethod(model_from_template)  # type: ignore[method-assign,assignment]

    def update_endpoint(self: Any) -> Any:
        from moto.core.responses import ActionResult

        backend = self.sagemaker_backend
        name, config_name = self._get_param("EndpointName"), self._get_param("EndpointConfigName")
        endpoint, config = backend.endpoints.get(name), backend.endpoint_configs.get(config_name)
        if endpoint is None:
            raise models.ValidationError(message=f"Could not find endpoint '{name}'.")
        if config is None:
            raise models.ValidationError(message=f"Could not find endpoint configuration '{config_name}'.")
        current = {v["VariantName"]: v for v in endpoint.production_variants}
        retain = bool(self._get_param("RetainAllVariantProperties", False))
        excluded = {
            p["VariantPropertyType"] for p in self._get_param("ExcludeRetainedVariantProperties") or []
        }
        variants = endpoint._process_production_variants(config.production_variants)
        for variant in variants:
            before = current.get(variant["VariantName"])
            if not (retain and before):
                continue
            for prop, keys in (
                ("DesiredInstanceCount", ("CurrentInstanceCount", "DesiredInstanceCount")),
                ("DesiredWeight", ("CurrentWeight", "DesiredWeight")),
            ):
                if prop not in excluded:
                    for key in keys:
                        if key in before:
                            variant[key] = before[key]
        endpoint.endpoint_config_name = config_name
        endpoint.production_variants = variants
        return ActionResult({"EndpointArn": endpoint.arn})

    responses.SageMakerResponse.update_endpoint = update_endpoint  # type: ignore[attr-defined]


def patch_moto_sqs_sends() -> None:
    from moto.core.utils import unix_time
    from moto.sqs import models

    if getattr(models.SQSBackend.send_message, "_journey_patched", False):
        return
    sending = threading.local()  # the queue a send on this server thread is adding to
    every_attribute = models.Queue.attributes.fget  # type: ignore[attr-defined]

    def attributes(queue: Any) -> Any:
        if getattr(sending, "queue", None) is queue:  # what send_message and add_message read
            if not queue.fifo_queue:
                return {}
            value = getattr(queue, "content_based_deduplication", False)
            return {"ContentBasedDeduplication": str(value).lower() if isinstance(value, bool) else value}
        return every_attribute(queue)

    models.Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]
    send = models.SQSBackend.send_message

    def send_message(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        sending.queue = self.get_queue(queue_name)
        try:
            return send(self, queue_name, *args, **kwargs)
        finally:
            sending.queue = None

    send_message._journey_patched = True  # type: ignore[attr-defined]
    models.SQSBackend.send_message = send_message  # type: ignore[method-assign]

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > unix_time())

    models.SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.sagemaker_emu", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed)")
    patch_moto_sagemaker()
    patch_moto_sqs_sends()
    from localaws.server import serve_moto_until_stopped

    serve_moto_until_stopped(parser.parse_args().port)


if __name__ == "__main__":
    main()

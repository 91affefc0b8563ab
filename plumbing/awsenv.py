"""The AWS standard chain's environment variables, read in one place: the region and the endpoint.

botocore reads `AWS_DEFAULT_REGION` and the profile's `region` but not `AWS_REGION`, which ECS,
Lambda and the other SDKs set; `aws_region()` honours all three, in the AWS CLI's order.
`AWS_ENDPOINT_URL[_<SERVICE>]` botocore reads itself when it opens a client (moto in the tests,
the local stack); `aws_endpoint_url()` is for telling people where requests go (`config show`).
"""

from __future__ import annotations

import os

from botocore.exceptions import BotoCoreError
from botocore.session import Session


def aws_region() -> str | None:
    """`AWS_REGION`, else `AWS_DEFAULT_REGION`, else the profile's `region` (`AWS_PROFILE`,
    ~/.aws/config); None when none of them names one."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    try:
        configured = Session().get_config_variable("region")
    except BotoCoreError:  # a profile that does not exist: the client that needs it will say so
        return None
    return str(configured) if configured else None


def aws_endpoint_url() -> str | None:
    """`AWS_ENDPOINT_URL`, the endpoint every client uses unless a service has its own."""
    return os.environ.get("AWS_ENDPOINT_URL") or None

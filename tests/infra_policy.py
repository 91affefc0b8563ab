"""infra/*.yaml read as CloudFormation would resolve them for given parameters, and IAM's Allow
matching: enough to ask "may this role make this call on this resource?" without AWS.

`Template(name, parameters)` resolves `Ref`, `Fn::Sub`, `Fn::Select`, `Fn::Split`, `Fn::Join`,
`Fn::If` and the conditions; `!GetAtt X.Y` and a `Ref` to a resource stay as `<X.Y>` / `<X>`
placeholders; `AWS::NoValue` drops the item. `allows(statements, action, arn)` is IAM's matching of
`Action` and `Resource` (`*` and `?` wildcards; actions case-insensitive, resources not); conditions
are not evaluated (the callers check them separately where they matter).
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import yaml

INFRA = Path(__file__).resolve().parents[1] / "infra"
ACCOUNT, REGION = "123456789012", "us-east-1"
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "stack",
}
_NO_VALUE = object()


class _Loader(yaml.SafeLoader):
    """CloudFormation's short-form tags as their long form: `!Ref X` -> {"Ref": "X"}."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _tag)


def load(name: str) -> dict[str, Any]:
    return dict(yaml.load((INFRA / name).read_text(), Loader=_Loader))  # a SafeLoader subclass


class Template:
    def __init__(self, name: str, parameters: dict[str, str]) -> None:
        self.body = load(name)
        declared = self.body.get("Parameters", {})
        unknown = set(parameters) - set(declared)
        assert not unknown, f"{name} has no parameters {unknown}"
        self.parameters: dict[str, Any] = {}
        for key, spec in declared.items():
            value = parameters.get(key, spec.get("Default"))
            assert value is not None, f"{name}: parameter {key} has no default: pass it"
            value = str(value)
            if spec["Type"] == "CommaDelimitedList" or spec["Type"].startswith("List<"):
                self.parameters[key] = value.split(",")
            else:
                self.parameters[key] = value
        self.conditions = {
            key: self._condition(value) for key, value in self.body.get("Conditions", {}).items()
        }

    def _condition(self, value: Any) -> bool:
        ((op, args),) = value.items()
        if op in ("Condition", "Fn::Condition"):
            return self._condition(self.body["Conditions"][args])
        if op == "Fn::Equals":
            left, right = (self.resolve(a) for a in args)
            return bool(left == right)
        if op == "Fn::Not":
            return not self._condition(args[0])
        if op == "Fn::And":
            return all(self._condition(a) for a in args)
        if op == "Fn::Or":
            return any(self._condition(a) for a in args)
        raise AssertionError(f"unknown condition {op}")

    def resource(self, logical_id: str) -> dict[str, Any]:
        return dict(self.body["Resources"][logical_id])

    def created(self, logical_id: str) -> bool:
        condition = self.resource(logical_id).get("Condition")
        return condition is None or self.conditions[condition]

    def properties(self, logical_id: str) -> dict[str, Any]:
        return dict(self.resolve(self.resource(logical_id).get("Properties", {})))

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.parameters:
            return self.parameters[name]
        assert name in self.body["Resources"], f"Ref to unknown {name}"
        return f"<{name}>"

    def _sub(self, text: str, variables: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and name.split(".")[0] in self.body["Resources"]:
                return f"<{name}>"
            return str(self._ref(name))

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, args),) = value.items()
            if key == "Ref":
                return self._ref(args)
            if key == "Fn::GetAtt":
                return f"<{'.'.join(args)}>"
            if key == "Fn::Sub":
                if isinstance(args, str):
                    return self._sub(args, {})
                text, variables = args
                return self._sub(text, {k: self.resolve(v) for k, v in variables.items()})
            if key == "Fn::If":
                condition, yes, no = args
                return self.resolve(yes if self.conditions[condition] else no)
            if key == "Fn::Select":
                index, items = args
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                delimiter, text = args
                return str(self.resolve(text)).split(delimiter)
            if key == "Fn::Join":
                delimiter, items = args
                return delimiter.join(str(v) for v in self.resolve(items))
        out = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _NO_VALUE}

    def statements(self, role: str) -> list[dict[str, Any]]:
        """Every statement of the inline policies of `role` (an AWS::IAM::Role), resolved."""
        return [
            statement
            for policy in self.properties(role).get("Policies", [])
            for statement in policy["PolicyDocument"]["Statement"]
        ]


def _listed(value: Any) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def allows(statements: list[dict[str, Any]], action: str, arn: str) -> bool:
    """Some Allow statement names `action` (wildcards, any case) on `arn` (wildcards, exact case)."""
    return any(
        statement.get("Effect") == "Allow"
        and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in _listed(statement["Action"]))
        and any(fnmatch.fnmatchcase(arn, r) for r in _listed(statement["Resource"]))
        for statement in statements
    )


def sagemaker_arn(kind: str, name: str) -> str:
    """SageMaker's ARN of a resource: the name in lower case, as SageMaker writes every ARN."""
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name.lower()}"


# The resource each SageMaker call the model jobs make acts on: (IAM action, ARN kind, name parameter).
SAGEMAKER_CALLS = {
    "DescribeEndpoint": ("endpoint", "EndpointName"),
    "DescribeEndpointConfig": ("endpoint-config", "EndpointConfigName"),
    "DescribeModel": ("model", "ModelName"),
    "CreateModel": ("model", "ModelName"),
    "CreateEndpointConfig": ("endpoint-config", "EndpointConfigName"),
    "CreateEndpoint": ("endpoint", "EndpointName"),
    "UpdateEndpoint": ("endpoint", "EndpointName"),
}


def required_permissions(operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(action, resource ARN) pairs IAM checks for one SageMaker API call the jobs make."""
    kind, name = SAGEMAKER_CALLS[operation]
    arn = sagemaker_arn(kind, params[name])
    needed = [(f"sagemaker:{operation}", arn)]
    if params.get("Tags"):  # tagging on create is authorised as AddTags too
        needed.append(("sagemaker:AddTags", arn))
    if operation == "CreateModel":  # the model runs as ExecutionRoleArn: the caller passes it
        needed.append(("iam:PassRole", params["ExecutionRoleArn"]))
    if operation in ("CreateEndpoint", "UpdateEndpoint"):  # the endpoint takes the config by name
        needed.append(
            (f"sagemaker:{operation}", sagemaker_arn("endpoint-config", params["EndpointConfigName"]))
        )
    return needed

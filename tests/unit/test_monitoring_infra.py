"""Retraining on evidence (infra/service.yaml): the ModelDrift alarm can start the retraining task,
off by default; a daily drift job runs `churn-model drift --emf` on the same task definition."""

from __future__ import annotations

import json

from tests.infra_policy import Template
from tests.unit.test_infra_templates import SERVICE


def test_retrain_on_drift_is_off_by_default_and_targets_the_retraining_task() -> None:
    off = Template("service.yaml", SERVICE)
    assert off.created("RetrainSchedule") and not off.created("RetrainOnDriftRule")
    assert not off.created("DriftSchedule")

    on = Template(
        "service.yaml",
        {
            **SERVICE,
            "RetrainOnDrift": "true",
            "DriftScheduleExpression": "cron(30 1 * * ? *)",
            "TablePrefix": "prod-",
        },
    )
    rule = on.properties("RetrainOnDriftRule")
    assert rule["EventPattern"]["detail-type"] == ["CloudWatch Alarm State Change"]
    assert rule["EventPattern"]["resources"] == [
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:prod-model-drift"
    ]
    assert rule["EventPattern"]["detail"]["state"]["value"] == ["ALARM"]
    # the same target as the monthly schedule: the retraining task, its role, its network
    assert rule["Targets"] == on.properties("RetrainSchedule")["Targets"]
    assert on.properties("RetrainSchedule")["State"] == "ENABLED"  # the schedule keeps running

    drift = on.properties("DriftSchedule")["Targets"][0]
    command = json.loads(drift["Input"])["containerOverrides"][0]
    container = on.properties("TrainerTaskDefinition")["ContainerDefinitions"][0]
    assert command["name"] == container["Name"]
    assert command["command"] == ["churn-model", "drift", "--emf", "--table-prefix", "prod-"]
    assert (
        drift["EcsParameters"]["TaskDefinitionArn"]
        == on.properties("RetrainSchedule")["Targets"][0]["EcsParameters"]["TaskDefinitionArn"]
    )


def test_the_drift_alarm_is_one_metric_math_alarm_named_as_the_rule_expects() -> None:
    alarms = Template("alarms.yaml", {"DeadLetterQueueUrl": "https://sqs/q", "TablePrefix": "prod-"})
    alarm = alarms.properties("ModelDrift")
    assert alarm["AlarmName"] == "prod-model-drift"
    expression = next(m["Expression"] for m in alarm["Metrics"] if "Expression" in m)
    assert expression == "IF(m1 > 0.25, 1, 0)"
    assert int(alarm["EvaluationPeriods"]) == int(alarm["DatapointsToAlarm"]) == 3
    assert alarm["TreatMissingData"] == "notBreaching"

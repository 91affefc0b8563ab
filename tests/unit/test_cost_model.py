"""bench/cost_model.py's choices: the endpoint (instances or serverless) and the task size per volume."""

from __future__ import annotations

from bench.cost_model import (
    MAX_SERVERLESS_CONCURRENCY,
    Measured,
    crossover,
    endpoint_choice,
    endpoint_month,
    instances_month,
    monthly_bill,
    one_instance_buys,
    report,
    serverless_concurrency,
    serverless_month,
    task_month,
    task_size,
    tasks_of,
)


def measured(cpu_ms: float = 3.6, call_ms: float = 52.0) -> Measured:
    events = 2_000
    return Measured(
        events=events,
        requests={("sagemaker-runtime", "InvokeEndpoint"): 60, ("dynamodb", "PutItem"): 1_500},
        rru=1.1 * events,
        wru=1.7 * events,
        cpu_seconds=cpu_ms / 1000 * events,
        event_bytes=130,
        partition_bytes=1_600,
        events_per_customer_day=1.6,
        invocation_ms=call_ms,
        rows_per_invocation=50,
    )


def test_serverless_is_recommended_while_it_costs_less_and_fits_its_concurrency() -> None:
    m = measured()
    assert endpoint_choice(m, 1e6) == "serverless"
    assert serverless_month(m, 1e6) < instances_month(m, 1e6)
    cross = crossover(m)
    assert cross is not None and cross > 1e8
    assert endpoint_choice(m, cross * 1.5) == "instances"
    assert serverless_concurrency(m, cross * 1.5) > MAX_SERVERLESS_CONCURRENCY or (
        instances_month(m, cross * 1.5) <= serverless_month(m, cross * 1.5)
    )
    floor = one_instance_buys(m)
    # where serverless costs one always-on instance (its bill steps with the tasks, hence no equality)
    assert floor is not None
    assert serverless_month(m, floor * 0.999) < instances_month(m, 1e4) <= serverless_month(m, floor)


def test_the_bill_takes_the_recommended_endpoint_and_the_smallest_task_that_carries_the_peak() -> None:
    m = measured()
    bill = monthly_bill(m, 1e6)
    assert bill["SageMaker endpoint (recommended, below)"] == serverless_month(m, 1e6)
    assert task_size(m, 1e6) == (0.5, 1.0)
    assert monthly_bill(m, 1e6, "instances")["SageMaker endpoint (recommended, below)"] == instances_month(
        m, 1e6
    )
    assert "crossover:" in report(m) and "recommended" in report(m)


def test_a_slower_model_call_moves_the_crossover_down() -> None:
    fast, slow = crossover(measured(call_ms=20)), crossover(measured(call_ms=400))
    assert fast is not None and slow is not None and slow < fast


def test_the_task_size_is_chosen_with_the_endpoint_calls_it_implies() -> None:
    # Half-vCPU tasks cost a little less in Fargate at 100 M events a day, but twice as many of them
    # each score thinner batches: more serverless calls per event. The pair is what is chosen.
    events = 1_700
    m = Measured(
        events=events,
        requests={("sagemaker-runtime", "InvokeEndpoint"): 0.0241 * events},
        rru=0.64 * events,
        wru=1.49 * events,
        cpu_seconds=2.63 / 1000 * events,
        event_bytes=132,
        partition_bytes=1_600,
        events_per_customer_day=1.6,
        invocation_ms=54.0,
        rows_per_invocation=50,
    )

    def month(vcpu: float, gb: float) -> tuple[float, float]:
        return tasks_of(m, 1e8, vcpu) * task_month(vcpu, gb), endpoint_month(m, 1e8, vcpu)

    half, one = month(0.5, 1.0), month(1.0, 2.0)
    assert half[0] < one[0] and sum(half) > sum(one)  # cheaper tasks, dearer in all
    assert task_size(m, 1e8) == (1.0, 2.0)

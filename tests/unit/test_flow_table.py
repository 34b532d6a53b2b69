"""The flow table: one entry per step, names that lead to code, policies that agree."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from resizeflow import flows
from resizeflow.flows import OnAbort, Side, Subject

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[2]
ALL_STEPS = [step for flow in flows.FLOWS.values() for step in flow.steps]


def test_task_names_are_unique_and_indexed() -> None:
    names = [step.task for step in ALL_STEPS]
    assert len(names) == len(set(names))
    assert set(flows.STEPS) == set(names)
    for flow in flows.FLOWS.values():
        for step in flow.steps:
            assert flows.flow_of(step.task) is flow
            assert flows.step(step.task) is step


@pytest.mark.parametrize("step", ALL_STEPS, ids=lambda s: s.task)
def test_each_step_names_a_function_that_exists(step: flows.Step) -> None:
    module, _, name = step.fn.partition(":")
    fn = getattr(importlib.import_module(module), name)
    assert callable(fn)
    assert fn.__name__ == step.short


@pytest.mark.parametrize("step", ALL_STEPS, ids=lambda s: s.task)
def test_each_task_name_is_written_once_as_a_literal(step: flows.Step) -> None:
    """grep goes from a chain, a journal row or a log line to the step's entry."""
    hits = [
        path for path in (ROOT / "resizeflow").rglob("*.py") if f'"{step.task}"' in path.read_text()
    ]
    assert hits == [ROOT / "resizeflow" / "flows.py"]
    assert len(re.findall(re.escape(f'"{step.task}"'), hits[0].read_text())) == 1


def test_migration_flows_run_on_source_or_dest_and_operations_on_their_instance() -> None:
    for flow in flows.FLOWS.values():
        sides = {step.side for step in flow.steps}
        if flow.subject is Subject.MIGRATION:
            assert sides <= {Side.SOURCE, Side.DEST}, flow.name
            assert flow.task_state is None
        else:
            assert sides == {Side.INSTANCE} and len(flow.steps) == 1, flow.name
            # Nova shows no task_state while a volume is attached or detached.
            volume_op = flow in (flows.ATTACH_VOLUME, flows.DETACH_VOLUME)
            assert (flow.task_state is None) == volume_op, flow.name


def test_a_resize_can_only_be_handed_back_before_the_hypervisor_changed() -> None:
    """BACK_TO_VERIFY is a promise that the server is still whole on the dest:
    no step before it may have touched the hypervisor."""
    for flow in flows.FLOWS.values():
        for i, step in enumerate(flow.steps):
            if step.on_abort is OnAbort.BACK_TO_VERIFY:
                assert flow.name in ("confirm", "revert"), step.task
                assert not any(s.touches_hypervisor for s in flow.steps[:i]), step.task


def test_only_the_first_step_of_a_resize_has_nothing_to_undo() -> None:
    nothing = [s.task for s in ALL_STEPS if s.on_abort is OnAbort.NOTHING_TO_UNDO]
    assert nothing == ["resizeflow.resize.prep_resize"]
    assert not flows.RESIZE.steps[0].touches_hypervisor


def test_events_are_named_as_novas() -> None:
    assert flows.STOP.last.event == "compute_stop_instance"
    assert flows.DELETE.last.event == "compute_terminate_instance"
    assert [s.event for s in flows.RESIZE.steps] == [
        "compute_prep_resize",
        "compute_resize_instance",
        "compute_finish_resize",
    ]


def test_steps_of_one_nova_method_share_its_event() -> None:
    """Nova's confirm_resize is four steps, its revert_resize four and its
    finish_revert_resize one: each records one event, ended by its last step."""
    assert {s.event for s in flows.CONFIRM.steps} == {"compute_confirm_resize"}
    assert [s.event for s in flows.REVERT.steps] == ["compute_revert_resize"] * 4 + [
        "compute_finish_revert_resize"
    ]
    ends = [flows.REVERT.ends_event(s) for s in flows.REVERT.steps]
    assert ends == [False, False, False, True, True]
    assert [flows.CONFIRM.ends_event(s) for s in flows.CONFIRM.steps] == [False] * 3 + [True]
    for flow in flows.FLOWS.values():
        for step in flow.steps:
            # One event, one host: a Nova method runs on one compute.
            same = [s for s in flow.steps if s.event == step.event]
            assert {s.side for s in same} == {step.side}, step.task


@pytest.mark.parametrize("step", ALL_STEPS, ids=lambda s: s.task)
def test_steps_with_a_hypervisor_phase_yield_their_work(step: flows.Step) -> None:
    """The table says which steps work outside the row locks; their functions agree."""
    module, _, name = step.fn.partition(":")
    fn = getattr(importlib.import_module(module), name)
    assert inspect.isgeneratorfunction(fn) is step.hypervisor_phase
    if step.hypervisor_phase:
        assert step.touches_hypervisor

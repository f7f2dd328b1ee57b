"""The lean ``transitions`` classes behave exactly like the stock ones.

One machine definition with every kind of callback is built twice, on ``Machine`` and on
``LeanMachine``; Hypothesis drives both with the same triggers and the test compares results,
states, raised errors and the full callback log, order included.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from transitions import EventData, Machine, MachineError
from transitions.core import Transition

from statemachine import EventType, RuntimeMachine, RuntimeRecord, Status
from statemachine.errors import StatusConflict, TransitionNotAllowed
from statemachine.lean import LeanMachine
from statemachine.machine import _Endpoints


class _StockTransition(_Endpoints, Transition):
    """The production transition's endpoints on the library's own transition class."""


class StockStatusMachine(Machine):
    """The library's own machine with the production transitions, to prove the lean one equal."""

    transition_cls = _StockTransition


class Model:
    """Records every callback the machine makes, with the state it saw."""

    def __init__(self) -> None:
        self.state = ""
        self.log: list[tuple[str, str]] = []
        self.allow = True
        self.block = False
        self.explode = ""

    def note(self, name: str) -> None:
        self.log.append((name, self.state))
        if self.explode == name:
            raise RuntimeError(name)

    # named callbacks, resolved from strings by the machine
    def named_before(self, *_: Any, **__: Any) -> None:
        self.note("named_before")

    def is_allowed(self, *_: Any, **__: Any) -> bool:
        self.note("is_allowed")
        return self.allow


def _callback(name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> None:
        event = args[0] if args and isinstance(args[0], EventData) else None
        model: Any = event.model if event is not None else kwargs["owner"]
        model.note(name)

    return call


def _condition(name: str, attribute: str) -> Any:
    def check(*args: Any, **kwargs: Any) -> bool:
        event = args[0] if args and isinstance(args[0], EventData) else None
        model: Any = event.model if event is not None else kwargs["owner"]
        model.note(name)
        return bool(getattr(model, attribute))

    return check


def build(
    cls: type[Machine], send_event: bool, ignore_invalid: bool, queued: bool = False
) -> tuple[Machine, Model]:
    model = Model()
    states: list[Any] = [
        {"name": "A", "on_enter": _callback("enter_A"), "on_exit": _callback("exit_A")},
        {"name": "B", "on_enter": _callback("enter_B"), "on_exit": _callback("exit_B")},
        {"name": "C", "final": True, "on_enter": _callback("enter_C")},
    ]
    machine = cls(
        model=model,
        states=states,
        initial="A",
        send_event=send_event,
        auto_transitions=False,
        ignore_invalid_triggers=ignore_invalid,
        prepare_event=_callback("prepare_event"),
        finalize_event=_callback("finalize_event"),
        before_state_change=_callback("before_state_change"),
        after_state_change=_callback("after_state_change"),
        on_final=_callback("on_final"),
        queued=queued,
    )
    machine.add_transition(
        "go",
        "A",
        "B",
        prepare=_callback("prepare_go"),
        conditions=[_condition("allow_go", "allow"), "is_allowed"],
        unless=_condition("block_go", "block"),
        before=["named_before", _callback("before_go")],
        after=_callback("after_go"),
    )
    machine.add_transition("go", "*", None, after=_callback("after_go_fallback"))
    machine.add_transition("back", "B", "A", after=_callback("after_back"))
    machine.add_transition("finish", "B", "C", before=_callback("before_finish"))
    machine.add_transition("stay", "*", "=", after=_callback("after_stay"))
    return machine, model


TRIGGERS = ["go", "back", "finish", "stay"]  # "back" from A: an invalid trigger
STEP = st.tuples(
    st.sampled_from(TRIGGERS),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["", "before_go", "after_back", "finalize_event", "enter_B"]),
)


def _run(
    cls: type[Machine],
    steps: list[tuple[str, bool, bool, str]],
    send_event: bool,
    ignore_invalid: bool,
    on_exception: bool,
) -> list[Any]:
    machine, model = build(cls, send_event, ignore_invalid)
    if on_exception:
        machine.on_exception = [_callback("on_exception")]
    outcomes: list[Any] = []
    for trigger, allow, block, explode in steps:
        model.allow, model.block, model.explode = allow, block, explode
        kwargs = {} if send_event else {"owner": model}
        try:
            outcomes.append(machine.events[trigger].trigger(model, **kwargs))
        except (MachineError, RuntimeError) as error:
            outcomes.append((type(error).__name__, str(error)))
        outcomes.append(model.state)
    return [*outcomes, model.log]


@given(
    steps=st.lists(STEP, max_size=12),
    send_event=st.booleans(),
    ignore_invalid=st.booleans(),
    on_exception=st.booleans(),
)
def test_lean_machine_matches_the_stock_machine(
    steps: list[tuple[str, bool, bool, str]],
    send_event: bool,
    ignore_invalid: bool,
    on_exception: bool,
) -> None:
    stock = _run(Machine, steps, send_event, ignore_invalid, on_exception)
    lean = _run(LeanMachine, steps, send_event, ignore_invalid, on_exception)
    assert lean == stock


def test_a_queued_lean_machine_takes_the_stock_path() -> None:
    seen: dict[str, list[str]] = {}
    for cls in (Machine, LeanMachine):
        for queued in (True, False):
            machine, model = build(cls, True, False, queued=queued)
            states: list[str] = []

            def nested(event: EventData, model: Model = model, states: list[str] = states) -> None:
                event.machine.events["back"].trigger(model)
                states.append(model.state)  # queued: "back" has not run yet

            machine.events["go"].transitions["A"][0].after.append(nested)
            assert machine.events["go"].trigger(model)
            assert model.state == "A"
            seen[f"{cls.__name__} queued={queued}"] = states
    assert seen["LeanMachine queued=True"] == seen["Machine queued=True"] == ["B"]
    assert seen["LeanMachine queued=False"] == seen["Machine queued=False"] == ["A"]


def test_an_unregistered_model_state_is_a_clear_error() -> None:
    machine, model = build(LeanMachine, True, False)
    model.state = "nowhere"
    with pytest.raises(ValueError, match="nowhere"):
        machine.events["go"].trigger(model)


PRODUCTION_STEP = st.one_of(
    st.tuples(st.just("event"), st.integers(0, 2), st.sampled_from(list(EventType))),
    st.tuples(
        st.just("admin"),
        st.integers(0, 2),
        st.tuples(st.sampled_from(list(Status)), st.sampled_from(list(Status))),
    ),
)


def _drive_production(machine: RuntimeMachine, starts: list[Status], steps: list[Any]) -> Any:
    records = [RuntimeRecord(f"g{i}", status) for i, status in enumerate(starts)]
    outcomes: list[Any] = []
    for now, (kind, index, what) in enumerate(steps, start=1):
        record = records[index]
        try:
            if kind == "event":
                effect = machine.apply(record, what, now)
            else:
                effect = machine.set_status(record, what[0], what[1], now)
            outcomes.append((effect.status_changed, effect.snapshot_due, effect.pair_allowed))
        except (StatusConflict, TransitionNotAllowed) as error:
            outcomes.append((type(error).__name__, str(error)))
    return outcomes, [
        (r.state, r.engine_health, r.updated_at_ms, r.last_emitted_summary) for r in records
    ]


@given(
    starts=st.lists(st.sampled_from(list(Status)), min_size=3, max_size=3),
    steps=st.lists(PRODUCTION_STEP, max_size=25),
)
def test_the_production_machine_matches_its_stock_twin(
    starts: list[Status], steps: list[Any]
) -> None:
    """The configuration production runs (Enum states, ``model=None``, records passed to
    ``trigger``, ``source='*'`` changes with guards, the Transition subclass) on the lean
    classes and on the library's own, driven alike: same effects, errors and records."""
    lean = _drive_production(RuntimeMachine(), starts, steps)
    stock = _drive_production(RuntimeMachine(StockStatusMachine), starts, steps)
    assert lean == stock

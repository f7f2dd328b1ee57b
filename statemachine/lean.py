"""``transitions`` classes whose trigger path does the library's work without its logging.

On every trigger the stock classes call ``logger.debug`` seven times, ``logger.info`` once per
callback, and walk empty callback lists through ``itertools.chain``. Measured here that is
about half of a 7.8 us trigger, and the consumer fires one trigger per health event.

These subclasses keep the library's semantics (machine- and transition-level ``prepare``,
conditions and ``unless``, ``before``/``after``, ``before_state_change``/
``after_state_change``, state ``on_enter``/``on_exit``/``on_final``, ``on_exception``,
``finalize_event``, string callbacks, ``send_event`` either way) and drop only the logging
and the empty-list walks. A queued machine takes the stock path. ``tests/test_lean.py``
drives the same transitions through these and through the stock classes and compares
every outcome and callback order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import Enum
from typing import TYPE_CHECKING, Any

from transitions import EventData, Machine
from transitions.core import Event, State, Transition

if TYPE_CHECKING:  # a name the stubs define, not the module
    from transitions.core import Callback

log = logging.getLogger(__name__)


def _state_name(value: Any) -> Any:
    """The key ``Machine.states`` uses: an Enum member's name (``_name_``, a plain attribute,
    is ten times cheaper than the ``name`` property), anything else as it is."""
    return value._name_ if isinstance(value, Enum) else value


class LeanTransition(Transition):
    """``Transition.execute`` without its DEBUG lines; empty callback lists are skipped."""

    def execute(self, event_data: EventData) -> bool:
        machine = event_data.machine
        if self.prepare:
            machine.callbacks(self.prepare, event_data)
        for condition in self.conditions:
            if not condition.check(event_data):
                return False
        if machine.before_state_change:
            machine.callbacks(machine.before_state_change, event_data)
        if self.before:
            machine.callbacks(self.before, event_data)
        if self.dest:  # None: an internal transition, the state stays
            self._change_state(event_data)
        if self.after:
            machine.callbacks(self.after, event_data)
        if machine.after_state_change:
            machine.callbacks(machine.after_state_change, event_data)
        return True


class LeanEvent(Event):
    """``Event.trigger`` without the ``partial`` and queue hop when the machine has no queue."""

    def trigger(self, model: object, *args: Any, **kwargs: Any) -> bool:
        machine = self.machine
        if machine.has_queue:
            return super().trigger(model, *args, **kwargs)
        return self._trigger(EventData(None, self, machine, model, args, kwargs))

    def _trigger(self, event_data: EventData) -> bool:
        machine = self.machine
        name = _state_name(getattr(event_data.model, machine.model_attribute))
        state = machine.states.get(name) or machine.get_state(name)  # unknown: ValueError
        event_data.state = state
        try:
            candidates = self.transitions.get(name)
            if candidates is not None or self._is_valid_source(state):  # raises or warns
                if machine.prepare_event:
                    machine.callbacks(machine.prepare_event, event_data)
                for transition in candidates or ():
                    event_data.transition = transition
                    if transition.execute(event_data):
                        event_data.result = True
                        break
        except BaseException as error:
            event_data.error = error  # type: ignore[assignment]  # as stock: any BaseException
            if not machine.on_exception:
                raise
            machine.callbacks(machine.on_exception, event_data)
        finally:
            if machine.finalize_event:
                try:
                    machine.callbacks(machine.finalize_event, event_data)
                except BaseException as error:  # as stock: logged, never raised
                    log.error("finalize_event callback failed: %r", error)
        return bool(event_data.result)


class LeanMachine(Machine):
    """A ``Machine`` built from the lean classes, with callbacks called without logging."""

    transition_cls = LeanTransition
    event_cls = LeanEvent

    def get_model_state(self, model: object) -> State:
        name = _state_name(getattr(model, self.model_attribute))
        return self.states.get(name) or self.get_state(name)  # unknown: ValueError, as stock

    def callbacks(self, funcs: Iterable[Callback], event_data: EventData) -> None:
        for func in funcs:
            self.callback(func, event_data)

    def callback(self, func: Callback, event_data: EventData) -> None:
        if not callable(func):  # a name: resolved on the model or imported, as stock
            func = self.resolve_callable(func, event_data)
        if self.send_event:
            func(event_data)
        else:
            func(*event_data.args, **event_data.kwargs)

"""Small immutable value classes, without ``dataclasses``.

``dataclasses`` imports ``inspect``: together about 1.2 MB of memory and
10 ms of start-up here (a Pi Zero: ten times the time), for a daemon whose
whole footprint is 13-15 MB.  The few value classes kei makes at run time
(a reading, a parsed module line, an ECHONET Lite frame) derive from
``Frozen`` instead::

    class Event(Frozen):
        __slots__ = ("num", "sender", "side", "param")
        DEFAULTS = {"side": None, "param": None}

An instance is built by position or by keyword as a dataclass is, cannot be
changed, is compared and hashed by its class and its fields, pickles, and
``replace(**changes)`` makes a changed copy.  Named tuples
(``collections.namedtuple``) serve the values that are tuples by nature.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from typing import Any, Dict, Tuple


class Frozen:
    """Base of an immutable value class (see the module docstring)."""

    __slots__ = ()
    FIELDS: Tuple[str, ...] = ()       # the base classes' fields, then the class's __slots__
    DEFAULTS: Dict[str, Any] = {}      # immutable default values, by field

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__slots__" in cls.__dict__ and "FIELDS" not in cls.__dict__:
            cls.FIELDS = cls.FIELDS + tuple(cls.__dict__["__slots__"])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields, name = self.FIELDS, type(self).__name__
        if len(args) > len(fields):
            raise TypeError("%s takes %d arguments, got %d" % (name, len(fields), len(args)))
        values = dict(zip(fields, args))
        for field, value in kwargs.items():
            if field not in fields:
                raise TypeError("%s has no field %r" % (name, field))
            if field in values:
                raise TypeError("%s got two values for %r" % (name, field))
            values[field] = value
        setter = object.__setattr__
        for field in fields:
            if field in values:
                setter(self, field, values[field])
            elif field in self.DEFAULTS:
                setter(self, field, self.DEFAULTS[field])
            else:
                raise TypeError("%s needs a value for %r" % (name, field))

    def _values(self) -> tuple:
        return tuple(getattr(self, field) for field in self.FIELDS)

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` (as ``dataclasses.replace``)."""
        values = dict(zip(self.FIELDS, self._values()))
        values.update(changes)
        return type(self)(**values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("%s is immutable: cannot set %r" % (type(self).__name__, name))

    def __delattr__(self, name: str) -> None:
        raise AttributeError("%s is immutable: cannot delete %r" % (type(self).__name__, name))

    def __eq__(self, other: Any) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return "%s(%s)" % (type(self).__name__,
                           ", ".join("%s=%r" % (field, getattr(self, field)) for field in self.FIELDS))

    def __reduce__(self) -> tuple:
        return type(self), self._values()

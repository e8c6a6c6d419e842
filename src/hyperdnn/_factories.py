"""Registries of factories for the core's named families: heads, trunks and conditioners.

:func:`factory_registry` makes one :class:`~hyperdnn.registry.Registry` of factories (a class
of the family or a function returning one) and its three entry points, so that every family
reads the same: ``register_<kind>(name, factory)`` (or ``@register_<kind>(name)``),
``create_<kind>(name, **kwargs)`` and ``list_<kind>s(pattern=None)``. Installed packages add
their own through the entry-point group ``hyperdnn.<kind>s``.

Example::

    >>> from hyperdnn._factories import factory_registry
    >>> class Shape:
    ...     def __init__(self, sides=3):
    ...         self.sides = sides
    >>> SHAPES, register_shape, create_shape, list_shapes = factory_registry("shape", Shape, None)
    >>> register_shape("square", lambda: Shape(4))
    <function <lambda> at ...>
    >>> create_shape("square").sides, list_shapes()
    (4, ['square'])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hyperdnn.registry import Registry

__all__ = ["factory_registry"]

T = TypeVar("T")


def factory_registry(
    kind: str, base: type[T], entry_point_group: str | None
) -> tuple[Registry[Callable[..., T]], Callable[..., Any], Callable[..., T], Callable[..., list[str]]]:
    """A registry of ``kind`` factories and its ``register``, ``create`` and ``list`` functions.

    Args:
        kind: the family, for names and messages (``"head"``).
        base: the family's class; a registered class must subclass it (a function may return one).
        entry_point_group: where installed packages declare theirs (``None``: nowhere).

    Returns:
        ``(registry, register, create, list)``.
    """

    def check(obj: Any) -> None:
        if not callable(obj) or (isinstance(obj, type) and not issubclass(obj, base)):
            raise TypeError(f"a {kind} factory must be a {base.__name__} subclass or a function, got {obj!r}")

    registry: Registry[Callable[..., T]] = Registry(kind, entry_point_group=entry_point_group, check=check)

    def create(name: str, **kwargs: Any) -> T:
        return registry.get(name)(**kwargs)

    create.__name__ = create.__qualname__ = f"create_{kind}"
    create.__module__ = base.__module__
    create.__doc__ = (
        f"Create the {kind} registered as ``name`` with ``kwargs``.\n\n"
        f"Raises:\n    hyperdnn.registry.RegistryError: unknown name (close matches and every name listed)."
    )
    return registry, registry.register, create, registry.list

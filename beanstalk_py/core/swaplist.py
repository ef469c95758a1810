"""``SwapList``: beanstalkd's ``ms``, whose order list-* replies and waiter service show."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class SwapList(Generic[T]):
    """beanstalkd's ``ms``: an array whose removal moves the last item into the hole.

    Its iteration order is what ``list-tubes`` and ``list-tubes-watched`` print, and ``take``
    reproduces the reference's "mostly FIFO" order of serving waiting clients.
    """

    __slots__ = ("items", "last")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.last = 0

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item: object) -> bool:
        return item in self.items

    def append(self, item: T) -> None:
        self.items.append(item)

    def remove_at(self, i: int) -> T:
        items = self.items
        item = items[i]
        tail = items.pop()
        if i < len(items):
            items[i] = tail
        return item

    def remove(self, item: T) -> bool:
        try:
            i = self.items.index(item)
        except ValueError:
            return False
        self.remove_at(i)
        return True

    def take(self) -> T:
        """Remove and return the next item in the reference's rotating order."""
        i = self.last % len(self.items)
        item = self.remove_at(i)
        self.last = i + 1
        return item

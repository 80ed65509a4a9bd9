"""The n-gram block: which next tokens would repeat an n-gram, and the one rule for a ban on every token."""

from __future__ import annotations


def effective_ban(banned: tuple[int, ...], vocab: int) -> tuple[int, ...]:
    """What is really banned: ``banned``, or nothing when it covers every token.

    The one rule for a block that bans the whole vocabulary (every decoder, the
    service included): it yields for that step, since a sequence must go on and
    no choice would be "right". Short tiny-vocabulary blocks (no_repeat_ngram=1) hit it.
    """
    if len(banned) < vocab or len(set(banned)) < vocab:
        return banned
    return ()


class NgramBlocker:
    """Bans the next token that would repeat an n-gram already in the sequence.

    Keeps, per sequence, a map from each (n-1)-gram to the tokens that have
    followed it, and the last n-1 tokens as a tuple. Beam search forks a
    blocker for every extra child of a beam each step, so the map is split in
    two: ``shared``, which is never changed once made (forks share it), and
    ``own``, the few entries added since, which a fork copies. When ``own``
    outgrows ``OWN_LIMIT`` it is folded into a new shared map: a fork then
    costs at most that many entries however long the sequence, and folding
    costs O(length) once every ``OWN_LIMIT`` tokens.
    """

    __slots__ = ("n", "shared", "own", "tail")
    OWN_LIMIT = 64

    def __init__(self, n: int, history: list[int]):
        self.n = n
        self.shared: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.own: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.tail: tuple[int, ...] = ()  # the last n-1 tokens, fewer at the start
        for token in history:
            self.push(token)
        self._fold()  # a long prime lands in shared in one go

    def push(self, token: int) -> tuple[int, ...]:
        """Add ``token``; returns what is banned next (``banned()``)."""
        n1 = self.n - 1
        if n1 < 0:
            return ()
        tail = self.tail
        if len(tail) == n1:
            own = self.own
            own[tail] = own.get(tail, ()) + (token,)
            tail = (tail + (token,))[1:]
            if len(own) > self.OWN_LIMIT:
                self._fold()
        else:
            tail = tail + (token,)
        self.tail = tail
        return self.banned()

    def _fold(self) -> None:
        if self.own:
            self.shared, self.own = self.seen, {}

    def banned(self) -> tuple[int, ...]:
        tail = self.tail
        if len(tail) != self.n - 1:
            return ()
        return self.shared.get(tail, ()) + self.own.get(tail, ())

    @property
    def seen(self) -> dict[tuple[int, ...], tuple[int, ...]]:
        """Every (n-1)-gram and the tokens that followed it, in order, as a new map."""
        merged = dict(self.shared)
        for key, followers in self.own.items():
            merged[key] = merged.get(key, ()) + followers
        return merged

    def fork(self) -> NgramBlocker:
        twin = NgramBlocker.__new__(NgramBlocker)
        twin.n, twin.shared, twin.own, twin.tail = self.n, self.shared, dict(self.own), self.tail
        return twin


def advance_beams(blockers: list[NgramBlocker], parents: list[int], tokens: list[int],
                  vocab: int) -> tuple[list[NgramBlocker], list[int], list[int]]:
    """Blockers of the children (parent, token) and their bans for the next step as (rows, columns).

    Every child needs its own copy of its parent's n-grams: the first child takes
    the original, the others fork it before any child pushes its token.
    """
    taken: set[int] = set()
    children = []
    for parent in parents:
        blocker = blockers[parent]
        children.append(blocker.fork() if id(blocker) in taken else blocker)
        taken.add(id(blocker))
    rows: list[int] = []
    cols: list[int] = []
    for row, (blocker, token) in enumerate(zip(children, tokens)):
        banned = effective_ban(blocker.push(token), vocab)
        if banned:
            rows.extend([row] * len(banned))
            cols.extend(banned)
    return children, rows, cols

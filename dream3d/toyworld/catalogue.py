"""ToyWorld's catalogue and prompt grammar: `a [<colour>] <shape> [with a <colour> front]`."""
from __future__ import annotations

import re
from dataclasses import dataclass

SHAPES = ("sphere", "cube", "cylinder", "cone", "torus")
COLOURS = {
    "red": (0.85, 0.15, 0.15),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.15, 0.30, 0.85),
    "yellow": (0.90, 0.80, 0.15),
    "purple": (0.60, 0.20, 0.80),
    "orange": (0.95, 0.50, 0.10),
}
SYNONYMS = {"ball": "sphere", "box": "cube", "donut": "torus", "doughnut": "torus"}
ARTICLES = ("a", "an", "the")
VIEW_SUFFIX = re.compile(r",?\s*\b(front|side|back|overhead)\s+view\s*$", re.IGNORECASE)


class PromptError(ValueError):
    """A prompt outside ToyWorld's grammar; the message lists the vocabulary."""


@dataclass(frozen=True)
class Item:
    """What a prompt denotes: a shape and the set of allowed body colours (several = "any")."""

    shape: str
    colours: tuple[str, ...]
    marker: str | None = None

    @property
    def key(self) -> str:
        body = "any" if len(self.colours) > 1 else self.colours[0]
        return f"{body}-{self.shape}" + (f"-{self.marker}-front" if self.marker else "")


def vocabulary() -> str:
    return (
        f"colours: {', '.join(COLOURS)}; shapes: {', '.join(SHAPES)} "
        f"(synonyms: {', '.join(f'{k}->{v}' for k, v in SYNONYMS.items())}); "
        "grammar: 'a [<colour>] <shape> [with a <colour> front]'"
    )


def parse_prompt(prompt: str) -> Item:
    """Parse a ToyWorld prompt; view suffixes (", front view") are ignored.

    >>> parse_prompt("A red box, side view")
    Item(shape='cube', colours=('red',), marker=None)
    """
    text = VIEW_SUFFIX.sub("", prompt.strip()).strip().lower()
    if not text:
        raise PromptError(f"empty prompt; ToyWorld understands {vocabulary()}")
    words = re.findall(r"[a-z]+|[^a-z\s]", text)
    marker = None
    if "with" in words:
        i = words.index("with")
        tail = [w for w in words[i + 1 :] if w not in ARTICLES]
        if len(tail) != 2 or tail[1] != "front" or tail[0] not in COLOURS:
            raise PromptError(f"could not read '{' '.join(words[i:])}': expected 'with a <colour> front'; {vocabulary()}")
        marker, words = tail[0], words[:i]
    words = [SYNONYMS.get(w, w) for w in words if w not in ARTICLES]
    for w in words:
        if w not in COLOURS and w not in SHAPES:
            raise PromptError(f"unknown word '{w}' in prompt {prompt!r}; ToyWorld understands {vocabulary()}")
    shapes = [w for w in words if w in SHAPES]
    colours = [w for w in words if w in COLOURS]
    if len(shapes) != 1 or len(colours) > 1 or words[-1] not in SHAPES:
        raise PromptError(f"prompt {prompt!r} must name one shape with at most one colour before it; {vocabulary()}")
    return Item(shapes[0], tuple(colours) if colours else tuple(COLOURS), marker)


def all_items() -> list[Item]:
    """Every plain single-colour catalogue item (the unconditional distribution's support)."""
    return [Item(s, (c,)) for s in SHAPES for c in COLOURS]

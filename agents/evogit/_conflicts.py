"""Merge conflicts as data: parse ``git merge`` conflict markers, resolve hunks, rebuild the file.

``git merge`` (run with ``merge.conflictStyle=diff3``) leaves conflicted files with hunks like::

    <<<<<<< ours
    a = 1
    ||||||| base
    a = 0
    =======
    a = 2
    >>>>>>> theirs

``parse_conflicts`` splits such a file into plain text and ``Hunk`` values; a resolution is one
string per hunk; ``render`` puts the file back together. ``choose_by_fitness`` is the fallback
resolution: every hunk takes the side of the fitter parent.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Hunk", "choose_by_fitness", "conflict_prompt", "parse_conflicts", "render"]


@dataclass(frozen=True, slots=True)
class Hunk:
    """One conflicted hunk: the two sides and (diff3 style) the common base."""

    ours: str
    theirs: str
    base: str | None = None


Segment = str | Hunk


def parse_conflicts(text: str) -> list[Segment]:
    """Split a conflicted file into plain text and ``Hunk`` segments.

    Raises:
        ValueError: The markers are unbalanced.

    >>> segs = parse_conflicts("x\\n<<<<<<< A\\n1\\n=======\\n2\\n>>>>>>> B\\ny\\n")
    >>> segs[0], segs[1].ours, segs[1].theirs, segs[2]
    ('x\\n', '1\\n', '2\\n', 'y\\n')
    """
    segments: list[Segment] = []
    plain: list[str] = []
    state = "plain"
    ours: list[str] = []
    base: list[str] = []
    theirs: list[str] = []
    has_base = False
    for line in text.splitlines(keepends=True):
        if state == "plain":
            if line.startswith("<<<<<<<"):
                if plain:
                    segments.append("".join(plain))
                    plain = []
                state, ours, base, theirs, has_base = "ours", [], [], [], False
            else:
                plain.append(line)
        elif state == "ours":
            if line.startswith("|||||||"):
                state, has_base = "base", True
            elif line.startswith("======="):
                state = "theirs"
            else:
                ours.append(line)
        elif state == "base":
            if line.startswith("======="):
                state = "theirs"
            else:
                base.append(line)
        elif line.startswith(">>>>>>>"):
            segments.append(Hunk("".join(ours), "".join(theirs), "".join(base) if has_base else None))
            state = "plain"
        else:
            theirs.append(line)
    if state != "plain":
        raise ValueError(f"unbalanced conflict markers: the file ends inside a hunk ({state} side)")
    if plain:
        segments.append("".join(plain))
    return segments


def render(segments: list[Segment], resolutions: list[str]) -> str:
    """The file with every hunk replaced by its resolution (one per hunk, in order)."""
    hunks = sum(1 for s in segments if isinstance(s, Hunk))
    if len(resolutions) != hunks:
        raise ValueError(f"{hunks} conflicted hunks need {hunks} resolutions, got {len(resolutions)}")
    out: list[str] = []
    it = iter(resolutions)
    for seg in segments:
        if isinstance(seg, Hunk):
            text = next(it)
            out.append(text if not text or text.endswith("\n") else text + "\n")
        else:
            out.append(seg)
    return "".join(out)


def choose_by_fitness(
    segments: list[Segment], ours_fitness: float | None, theirs_fitness: float | None
) -> list[str]:
    """Resolve every hunk with the side of the fitter parent (ours on ties or unknown fitness)."""
    take_theirs = theirs_fitness is not None and (ours_fitness is None or theirs_fitness > ours_fitness)
    return [(s.theirs if take_theirs else s.ours) for s in segments if isinstance(s, Hunk)]


def conflict_prompt(path: str, segments: list[Segment], index: int) -> str:
    """The prompt asking the LLM to merge hunk ``index`` of ``path``."""
    hunks = [s for s in segments if isinstance(s, Hunk)]
    hunk = hunks[index]
    lang = "python" if path.endswith(".py") else ""
    base = f"Common ancestor:\n```{lang}\n{hunk.base.rstrip()}\n```\n" if hunk.base is not None else ""
    return (
        f"Two improved versions of the same code in `{path}` conflict. Combine the ideas of both into "
        f"one correct version.\n{base}"
        f"Version A:\n```{lang}\n{hunk.ours.rstrip()}\n```\n"
        f"Version B:\n```{lang}\n{hunk.theirs.rstrip()}\n```\n"
        f"Reply with only the merged code in one ```{lang} code block, with no conflict markers."
    )

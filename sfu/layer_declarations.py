"""The simulcast layers a publisher declares with an offer (``sfu.publish`` ``layers``),
checked before anything is negotiated. Pure: no I/O.

A room names a plain track ``PARTICIPANT:MID`` and a simulcast source ``PARTICIPANT:SOURCE``:
both kinds share one key space per participant, so a source name must never be a mid, or
one of the two tracks would silently take the other's place at every subscriber. A source's
layers are what a subscriber switches between, so each quality appears once, a taller
picture never has a lower quality, and all layers of a source come in one offer (a
subscriber takes the source's layers as they are when it is first offered).

The rules, for a participant's publisher connection after this offer:

- a declared mid is a video section of the offer (a section the offer stops sending is
  left out: its declaration does not matter any more);
- a mid published before keeps what it was published as (a plain track or a layer);
- a source name is not all digits (the mids browsers and aiortc make), nor any mid of the
  connection, nor a source published before that is still sending; a new mid is not the
  name of a source either;
- within a source each quality appears once, and heights do not shrink as quality grows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

INVALID_LAYERS: Final = "invalid_layers"

# (source name, quality, height): one simulcast layer as the publisher declares it.
Declared = tuple[str, int, int]


@dataclass(frozen=True)
class Section:
    """One media section of the offer."""

    kind: str  # "audio" or "video"
    sending: bool  # False: the offer stops (or never starts) sending on it


class InvalidLayers(ValueError):
    code: Final = INVALID_LAYERS


_UNLISTED: Final = Section(kind="", sending=True)  # a published mid the offer leaves out


def check_layers(
    layers: Mapping[str, Declared],
    offered: Mapping[str, Section],
    published: Mapping[str, Declared | None],
) -> dict[str, Declared]:
    """The declarations of the tracks this offer publishes anew, by mid.

    ``offered`` is the offer's media sections by mid; ``published`` the tracks the
    participant publishes before this offer, by mid, each with its layer declaration (None:
    a plain track). Raises ``InvalidLayers`` saying what is wrong, the first rule broken.
    """
    kept = {mid: d for mid, d in published.items() if offered.get(mid, _UNLISTED).sending}
    new_mids = {mid for mid, s in offered.items() if s.sending and mid not in published}
    fresh: dict[str, Declared] = {}
    for mid, declared in sorted(layers.items()):
        section = offered.get(mid)
        if section is None:
            raise InvalidLayers(f"layer at mid {mid!r}: the offer has no media section {mid!r}")
        if section.kind != "video":
            raise InvalidLayers(f"layer at mid {mid!r}: a {section.kind} section cannot be a layer")
        if not section.sending:
            continue
        if mid in kept:
            before = kept[mid]
            if declared != before:
                was = "a plain track" if before is None else f"layer {before!r}"
                raise InvalidLayers(f"mid {mid!r} is already published as {was}")
            continue
        fresh[mid] = declared

    mids = set(offered) | set(published)
    kept_sources = {d[0] for d in kept.values() if d is not None}
    sources: dict[str, list[tuple[int, int, str]]] = {}
    for mid, (source, quality, height) in fresh.items():
        sources.setdefault(source, []).append((quality, height, mid))
    for source, entries in sorted(sources.items()):
        if source.isdigit():
            raise InvalidLayers(
                f"source name {source!r} is all digits and could be a mid: its track id "
                "would be a plain track's"
            )
        if source in mids:
            raise InvalidLayers(f"source name {source!r} is the mid of a media section")
        if source in kept_sources:
            raise InvalidLayers(
                f"source {source!r} is already published: declare all its layers in one offer"
            )
        entries.sort()
        for (q1, h1, m1), (q2, h2, m2) in pairwise(entries):
            if q1 == q2:
                raise InvalidLayers(
                    f"source {source!r} has quality {q1} twice (mids {m1!r} and {m2!r})"
                )
            if h2 < h1:
                raise InvalidLayers(
                    f"source {source!r}: quality {q2} ({h2} px) is shorter than "
                    f"quality {q1} ({h1} px)"
                )
    named = sorted(new_mids & kept_sources)
    if named:
        raise InvalidLayers(f"mid {named[0]!r} is the name of a published source")
    return fresh

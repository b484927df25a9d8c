"""Hotlists, not histories: what the street layer may alert on.

A plate hotlist entry and a description rule ("red car", "child, red top") each carry who
added them, why, and when they expire; they are the only reasons a passer-by's track may
leave anything behind. Matching is pure: a track's description (a class and attributes, each
a value with a confidence) is checked against the live entries at a given time. A track
that matches nothing is forgotten by its caller.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

MIN_ATTRIBUTE_CONFIDENCE = 0.4
"""An attribute below this confidence never satisfies a rule: a guess does not raise an
alert."""


def plate_key(text: str) -> str:
    """A plate as compared: upper case letters and digits only, O written as 0."""
    return re.sub(r"[^A-Z0-9]", "", text.upper()).replace("O", "0")


@dataclass(frozen=True)
class PlateEntry:
    plate: str
    reason: str
    added_by: str
    expires: datetime

    def live(self, now: datetime) -> bool:
        return now < self.expires


@dataclass(frozen=True)
class DescriptionRule:
    """Alert on tracks of `kind` ("person" or a vehicle type, or "vehicle" for any) whose
    attributes hold every `wanted` value, on `cameras` (empty: all), inside [start, expires)."""

    name: str
    kind: str
    wanted: Mapping[str, str]
    reason: str
    added_by: str
    start: datetime
    expires: datetime
    cameras: frozenset[str] = field(default_factory=frozenset)

    def live(self, now: datetime, camera: str) -> bool:
        return self.start <= now < self.expires and (not self.cameras or camera in self.cameras)

    def matches(self, kind: str, attributes: Mapping[str, tuple[str, float]]) -> bool:
        """Whether a track of `kind` with `attributes` (name -> (value, confidence)) fits."""
        any_vehicle = self.kind == "vehicle" and kind != "person"
        if self.kind != kind and not any_vehicle:
            return False
        for name, value in self.wanted.items():
            have, confidence = attributes.get(name, ("unknown", 0.0))
            if have != value or confidence < MIN_ATTRIBUTE_CONFIDENCE:
                return False
        return True


def parse_description(text: str) -> tuple[str, dict[str, str]]:
    """"red car" -> ("car", {"colour": "red"}); "child, red top, blue trousers" ->
    ("person", {"age_group": "child", "upper": "red", "lower": "blue"})."""
    words = [w for w in re.split(r"[\s,]+", text.lower()) if w]
    kinds = {"car", "truck", "bus", "motorcycle", "bicycle", "vehicle", "person"}
    people = {"child": ("age_group", "child"), "adult": ("age_group", "adult"),
              "man": ("sex", "male"), "woman": ("sex", "female")}
    kind = "person" if any(w in people for w in words) else next(
        (w for w in words if w in kinds), "person")
    wanted: dict[str, str] = {}
    for i, word in enumerate(words):
        if word in people:
            wanted.setdefault(*people[word])
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if nxt in ("top", "shirt", "jacket", "coat"):
            wanted["upper"] = word
        elif nxt in ("bottom", "trousers", "pants", "skirt", "shorts"):
            wanted["lower"] = word
        elif nxt in kinds - {"person"}:
            wanted["colour"] = word
    return kind, wanted


@dataclass
class Hotlists:
    plates: list[PlateEntry] = field(default_factory=list)
    rules: list[DescriptionRule] = field(default_factory=list)

    def plate_hit(self, text: str, now: datetime) -> PlateEntry | None:
        key = plate_key(text)
        return next((e for e in self.plates if e.live(now) and plate_key(e.plate) == key), None)

    def rule_hits(self, camera: str, kind: str, attributes: Mapping[str, tuple[str, float]],
                  now: datetime) -> list[DescriptionRule]:
        return [r for r in self.rules if r.live(now, camera) and r.matches(kind, attributes)]

"""Hotlists, not histories: what the street layer may alert on.

A plate hotlist entry and a description rule ("red car", "child, red top") each carry who
added them, why, and when they expire; they are the only reasons a passer-by's track may
leave anything behind. Matching is pure: a track's description (a class and attributes, each
a value with a confidence) is checked against the live entries at a given time. A track
that matches nothing is forgotten by its caller.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from facelens.errors import FacelensError

PALETTE = ("black", "white", "grey", "red", "orange", "yellow", "green", "blue", "purple",
           "brown")
"""The one fixed palette every colour attribute names (scene/attributes.py) and a
description may ask for."""
PLATE_KEY_CHARS = range(4, 11)
"""Plates of this many letters and digits are read (scene/plates.py); a hotlist entry of
another length could never match, so it is refused."""
MIN_ATTRIBUTE_CONFIDENCE = 0.4
"""An attribute below this confidence never satisfies a rule: a guess does not raise an
alert."""


def plate_key(text: str) -> str:
    """A plate as compared: upper case letters and digits only, O written as 0."""
    return re.sub(r"[^A-Z0-9]", "", text.upper()).replace("O", "0")


def listed_plate(plate: str) -> str:
    """`plate` as a hotlist lists it (full-width forms folded, spaces collapsed, upper case),
    refused unless its letters and digits are Latin A-Z and 0-9, 4-10 of them, and it holds no
    control character: plates are read over those alone, so a look-alike from another script
    (Cyrillic А, Greek Ο) was dropped from the key and the entry silently listed another,
    shorter plate."""
    text = " ".join(unicodedata.normalize("NFKC", plate).split())
    foreign = "".join(sorted({c for c in text if not c.isprintable()
                              or (c.isalnum() and not c.isascii())}))
    if foreign:
        raise FacelensError(f"{plate!r} holds {foreign!r}: a plate is Latin letters A-Z and "
                            "digits 0-9 (spaces and dashes aside)")
    if len(plate_key(text)) not in PLATE_KEY_CHARS:
        raise FacelensError(f"{plate!r} is not a plate that is read ({PLATE_KEY_CHARS[0]}-"
                            f"{PLATE_KEY_CHARS[-1]} letters and digits)")
    return text.upper()


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


KINDS = ("car", "truck", "bus", "motorcycle", "bicycle", "vehicle", "person")
PEOPLE = {"child": ("age_group", "child"), "adult": ("age_group", "adult"),
          "man": ("sex", "male"), "woman": ("sex", "female")}
GARMENTS = {**dict.fromkeys(("top", "shirt", "jacket", "coat"), "upper"),
            **dict.fromkeys(("bottom", "trousers", "pants", "skirt", "shorts"), "lower")}
FILLERS = frozenset({"a", "an", "and", "in", "with", "wearing"})
COLOUR_SPELLINGS = {"gray": "grey"}


def parse_description(text: str) -> tuple[str, dict[str, str]]:
    """"red car" -> ("car", {"colour": "red"}); "child, red top, blue trousers" ->
    ("person", {"age_group": "child", "upper": "red", "lower": "blue"}).

    Every word must be understood, a colour be one of PALETTE right before what it colours,
    and the words describe one kind of track with one value per attribute: a word skipped
    ("car red", "pink car") left a rule matching every car or none, and "man, woman" no one.
    """
    words = [COLOUR_SPELLINGS.get(w, w) for w in re.split(
        r"[\s,]+", unicodedata.normalize("NFKC", text).lower()) if w]
    kinds: set[str] = set()
    wanted: dict[str, str] = {}

    def want(name: str, value: str) -> None:
        if wanted.setdefault(name, value) != value:
            raise FacelensError(f"{text!r} asks for {name} {wanted[name]} and {value}")

    things = set(GARMENTS) | (set(KINDS) - {"person"})
    i = 0
    while i < len(words):
        word, after = words[i], words[i + 1] if i + 1 < len(words) else ""
        if word in PALETTE and after in things:
            kinds.add("person" if after in GARMENTS else after)
            want(GARMENTS.get(after, "colour"), word)
            i += 1
        elif word in KINDS:
            kinds.add(word)
        elif word in PEOPLE:
            kinds.add("person")
            want(*PEOPLE[word])
        elif word not in FILLERS:
            raise FacelensError(f"{text!r}: {_not_understood(word, after, things)}")
        i += 1
    if not kinds:
        raise FacelensError(f"{text!r} names no class or attribute")
    if len(kinds) > 1:
        raise FacelensError(f"{text!r} describes more than one kind of track: "
                            f"{', '.join(sorted(kinds))}")
    return kinds.pop(), wanted


def _not_understood(word: str, after: str, things: set[str]) -> str:
    known = {*PALETTE, *things, *KINDS, *PEOPLE, *FILLERS}
    if word in PALETTE and after and after not in known:  # "purple unicorn": the noun is new
        word = after
    elif word in PALETTE:
        return f"the colour {word!r} must come right before what it colours (a top, a car …)"
    elif word in things:
        return f"{word!r} needs a colour right before it"
    elif after in things:
        return f"{word!r} is not a colour the street layer names ({', '.join(PALETTE)})"
    return (f"{word!r} is not understood (classes: {', '.join(KINDS)}; people: "
            f"{', '.join(PEOPLE)}; a colour before top, trousers or a vehicle)")


def check_description(description: str) -> tuple[str, dict[str, str]]:
    """A rule's description parsed (parse_description), refused when it would match every
    passer-by: a rule says what it looks for."""
    kind, wanted = parse_description(description)
    if kind == "person" and not wanted:
        raise FacelensError("a rule about people must describe someone (e.g. 'child, red "
                            "top'), not match every passer-by")
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

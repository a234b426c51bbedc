"""What a validator asks miners: prompts they cannot predict, mixed with a small shipped set.

Every round draws its prompts from a generator seeded by::

    seed = SHA-256(b"agora/validator/probe/v1\\n" || canonical JSON of
                   {"block_hash", "validator", "netuid", "round"})

The block hash is the ledger's head when the round starts (unknown before that block exists),
``validator`` is the validator's hotkey (two validators ask different questions) and ``round`` a
counter the validator persists. A round has one *pool* of inputs, for which the validator runs
its reference model once; each miner gets its own draw from the pool (seeded by the round seed and
the miner's uid), in its own order and batch size, so that miners cannot copy each other's answers
and honest float noise from other batch shapes is part of every check.

Synthetic texts are built from a small vocabulary and templates, with numbers and a random tag,
so no two rounds repeat; the shipped ones (``data/probes.json``) cover cases synthetic text does
not: code, several scripts, near-duplicates, long inputs.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = [
    "PROBE_DOMAIN",
    "ShippedProbes",
    "draw",
    "embed_pool",
    "generate_pool",
    "round_seed",
    "shipped_probes",
    "synthetic_prompt",
    "synthetic_text",
]

PROBE_DOMAIN = b"agora/validator/probe/v1\n"

_NOUNS = (
    "river",
    "engine",
    "garden",
    "market",
    "teacher",
    "signal",
    "bridge",
    "library",
    "harbour",
    "forest",
    "ledger",
    "miner",
    "validator",
    "kitchen",
    "orchestra",
    "satellite",
    "village",
    "protocol",
    "glacier",
    "museum",
    "bakery",
    "compiler",
    "storm",
    "meadow",
    "tower",
    "archive",
    "physician",
    "violin",
    "desert",
    "lantern",
    "network",
    "circuit",
    "festival",
    "island",
)
_ADJECTIVES = (
    "quiet",
    "ancient",
    "bright",
    "hidden",
    "broken",
    "careful",
    "distant",
    "golden",
    "narrow",
    "restless",
    "silver",
    "tired",
    "curious",
    "heavy",
    "fragile",
    "crowded",
    "gentle",
    "rapid",
    "frozen",
    "honest",
    "noisy",
    "patient",
    "sudden",
    "wooden",
)
_VERBS = (
    "crossed",
    "repaired",
    "ignored",
    "painted",
    "measured",
    "followed",
    "opened",
    "described",
    "protected",
    "counted",
    "visited",
    "replaced",
    "signed",
    "watched",
    "built",
    "questioned",
    "carried",
    "translated",
    "found",
    "lost",
)
_PLACES = (
    "near the old station",
    "before sunrise",
    "in the northern valley",
    "after the long winter",
    "during the meeting",
    "behind the market",
    "on the third floor",
    "at the edge of town",
    "under a grey sky",
    "without a word",
    "for the second time",
    "in spite of the rain",
)
_TEMPLATES = (
    "The {adj} {noun} {verb} the {noun2} {place}.",
    "A {adj} {noun} and a {adj2} {noun2} {verb} {count} lanterns {place}.",
    "Why would the {noun} have {verb} the {adj} {noun2}?",
    "Report {tag}: {count} {noun}s {verb} {place}; status {adj}.",
    "{Noun} #{count} {verb} the {noun2}, then the {adj} {noun3} {verb2} it {place}.",
    "Note to self ({tag}): the {noun2} is {adj}, the {noun} is {adj2}, buy {count} eggs.",
)
_PROMPT_TEMPLATES = (
    "The {adj} {noun}",
    "Once the {noun} {verb} the {noun2},",
    "Question {count}: what {verb} the {adj} {noun}?\nAnswer:",
    "{Noun} log {tag}:",
    "In the {adj} {noun} {place},",
)


def round_seed(block_hash: str, validator: str, netuid: int, round_no: int) -> bytes:
    """The 32-byte seed of one probe round (see the module docstring)."""
    message = json.dumps(
        {"block_hash": block_hash, "validator": validator, "netuid": netuid, "round": round_no},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(PROBE_DOMAIN + message.encode()).digest()


def _rng(seed: bytes, *labels: object) -> random.Random:
    """A generator for one purpose within a round (the pool, one miner's draw ...)."""
    tag = json.dumps([seed.hex(), *labels], separators=(",", ":")).encode()
    return random.Random(int.from_bytes(hashlib.sha256(tag).digest(), "big"))


def _fill(template: str, rng: random.Random) -> str:
    noun, noun2, noun3 = rng.sample(_NOUNS, 3)
    adj, adj2 = rng.sample(_ADJECTIVES, 2)
    verb, verb2 = rng.sample(_VERBS, 2)
    return template.format(
        noun=noun,
        noun2=noun2,
        noun3=noun3,
        Noun=noun.capitalize(),
        adj=adj,
        adj2=adj2,
        verb=verb,
        verb2=verb2,
        place=rng.choice(_PLACES),
        count=rng.randrange(2, 10_000),
        tag=f"{rng.getrandbits(32):08x}",
    )


def synthetic_text(rng: random.Random) -> str:
    """One or a few sentences for an embedding probe."""
    sentences = rng.choice((1, 1, 2, 3))
    return " ".join(_fill(rng.choice(_TEMPLATES), rng) for _ in range(sentences))


def synthetic_prompt(rng: random.Random) -> str:
    """The start of a text for a generation probe."""
    return _fill(rng.choice(_PROMPT_TEMPLATES), rng)


@dataclass(frozen=True)
class ShippedProbes:
    embed: tuple[str, ...]
    generate: tuple[str, ...]


@lru_cache(maxsize=1)
def shipped_probes() -> ShippedProbes:
    """The probe set shipped in ``agora/validator/data/probes.json``."""
    text = resources.files("agora.validator").joinpath("data/probes.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return ShippedProbes(embed=tuple(data["embed"]), generate=tuple(data["generate"]))


def embed_pool(seed: bytes, synthetic: int = 12, shipped: int = 4) -> list[str]:
    """The round's embedding inputs: ``synthetic`` fresh texts and ``shipped`` from the set."""
    rng = _rng(seed, "embed-pool")
    texts = [synthetic_text(rng) for _ in range(synthetic)]
    texts += rng.sample(shipped_probes().embed, min(shipped, len(shipped_probes().embed)))
    rng.shuffle(texts)
    return texts


def generate_pool(seed: bytes, synthetic: int = 2, shipped: int = 1) -> list[str]:
    """The round's generation prompts."""
    rng = _rng(seed, "generate-pool")
    prompts = [synthetic_prompt(rng) for _ in range(synthetic)]
    prompts += rng.sample(shipped_probes().generate, min(shipped, len(shipped_probes().generate)))
    return prompts


def draw(seed: bytes, uid: int, pool_size: int, low: int, high: int) -> list[int]:
    """Indices into the pool for one miner: between ``low`` and ``high`` distinct items, in an
    order of their own."""
    rng = _rng(seed, "draw", uid)
    count = rng.randint(min(low, pool_size), min(high, pool_size))
    return rng.sample(range(pool_size), count)

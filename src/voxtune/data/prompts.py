"""Prompts to read aloud, cut from the user's own text: a glossary, product names, pages of the
documents they dictate.

    voxtune data prompts --text notes.txt --language en --count 20

Sentences are cut at sentence punctuation and line breaks; a prompt is 3–25 words, short enough
to read without a slip. A long sentence is cut at commas and semicolons, then into even pieces.
Runs of fragments under three words (a glossary's one term per line) become lists of terms
("Kubernetes, Helm chart, kubectl."), since those terms are what the model most needs to hear;
too few terms to make a prompt join a neighbouring sentence, or stand alone where none has room
(a term is never dropped). Duplicates (case and punctuation aside) are dropped. Pure text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MIN_WORDS, MAX_WORDS = 3, 25
# a sentence ends at . ! ? … (and their CJK/Devanagari forms) before a space, or at a line break
SENTENCE_END = re.compile(r"(?<=[.!?…。！？।])\s+|\s*\n\s*")
CLAUSE_END = re.compile(r"(?<=[,;:])\s+")
TRAILING = ",;:-–— "


def key(text: str) -> str:
    """What two prompts must share to count as the same one: words, case and punctuation
    aside."""
    return " ".join(re.findall(r"\w+", text.lower()))


def _pieces(sentence: str) -> list[str]:
    """A sentence over MAX_WORDS cut at its clauses, and a clause still too long into even
    pieces (a run-on paragraph without punctuation stays readable)."""
    if len(sentence.split()) <= MAX_WORDS:
        return [sentence]
    pieces: list[str] = []
    for clause in CLAUSE_END.split(sentence):
        words = clause.split()
        parts = -(-len(words) // MAX_WORDS)  # ceiling
        size = -(-len(words) // parts)
        pieces += [" ".join(words[start:start + size]) for start in range(0, len(words), size)]
    return pieces


def _finish(text: str) -> str:
    text = text.strip().rstrip(TRAILING)
    return text if re.search(r"[.!?…。！？।]$", text) else f"{text}."


def _join(pieces: Sequence[str]) -> str:
    return ", ".join(piece.strip().rstrip(TRAILING + ".!?…") for piece in pieces)


def _count(pieces: Sequence[str]) -> int:
    return sum(len(piece.split()) for piece in pieces)


def cut(text: str) -> list[str]:
    """`text` as prompts of MIN_WORDS–MAX_WORDS words, in the order they appear, no
    duplicates."""
    prompts: list[str] = []
    terms: list[str] = []  # consecutive short fragments (a glossary), read as a list

    def flush(following: str | None) -> str | None:
        """Emit the waiting terms; returns `following`, perhaps with too few terms before it."""
        if not terms:
            return following
        if _count(terms) < MIN_WORDS:
            if following is not None and _count([*terms, following]) <= MAX_WORDS:
                following = _join([*terms, following])
            elif prompts and _count([prompts[-1], *terms]) <= MAX_WORDS:
                prompts[-1] = _join([prompts[-1], *terms])
            else:
                prompts.append(_join(terms))  # shorter than MIN_WORDS, but no term is dropped
        else:
            chunk: list[str] = []
            for term in terms:  # a long glossary: prompts of up to MAX_WORDS words
                if chunk and _count([*chunk, term]) > MAX_WORDS:
                    prompts.append(_join(chunk))
                    chunk = []
                chunk.append(term)
            prompts.append(_join(chunk))
        terms.clear()
        return following

    for sentence in SENTENCE_END.split(text):
        for fragment in _pieces(sentence.strip()) if sentence.strip() else []:
            if len(fragment.split()) < MIN_WORDS:
                terms.append(fragment)
            else:
                prompts.append(flush(fragment) or fragment)
    flush(None)
    return unique(_finish(prompt) for prompt in prompts if key(prompt))


def unique(prompts: Iterable[str]) -> list[str]:
    """`prompts` without repeats (by `key`), first one kept."""
    seen: dict[str, str] = {}
    for prompt in prompts:
        seen.setdefault(key(prompt), prompt)
    return list(seen.values())


def pool(text: str, builtin: Sequence[str]) -> list[str]:
    """Every candidate prompt: the user's text cut into prompts, then the built-in sentences of
    the language (the Record page's list) — the user's first, as they hold the vocabulary the
    model is being tuned for."""
    return unique([*cut(text), *builtin])

"""Prompt templates are data: named built-in lists (shipped as JSON) or a user's file or list."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from asif_vdb.errors import InputError


def builtin_template_names() -> list[str]:
    folder = resources.files("asif_vdb") / "data" / "templates"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def load_templates(spec: str | Sequence[str] | None) -> list[str]:
    """``None`` -> the default prompt; a built-in name; a .json/.txt file; or a list of templates.

    Every template must contain ``{}`` (or ``{c}``) where the class name goes.
    """
    if spec is None:
        spec = "default"
    if isinstance(spec, str):
        templates = _load_named(spec)
    else:
        templates = list(spec)
    if not templates:
        raise InputError("the template list is empty")
    for t in templates:
        if not isinstance(t, str) or ("{}" not in t and "{c}" not in t):
            raise InputError(f"template {t!r} has no '{{}}' placeholder for the class name")
    return templates


def _load_named(spec: str) -> list[str]:
    names = builtin_template_names()
    if spec in names:
        text = (resources.files("asif_vdb") / "data" / "templates" / f"{spec}.json").read_text()
        return list(json.loads(text)["templates"])
    path = Path(spec)
    if path.is_file():
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            return list(data["templates"] if isinstance(data, dict) else data)
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if "{}" in spec or "{c}" in spec:
        return [spec]
    raise InputError(f"templates {spec!r}: not a built-in list ({', '.join(names)}), a file, or a template")


#: "a"/"an" right before the placeholder: the article is chosen by the class name.
ARTICLE = re.compile(r"\b([Aa])n? (?=\{c?\})")
#: Words that start with a vowel letter and a consonant sound ("a unicorn", "a one-way street").
CONSONANT_SOUND = re.compile(r"^(uni|use|usu|uti|ure|uro|eu|ewe|one\b|once\b|ouija)", re.IGNORECASE)
#: Words that start with a silent h ("an hour").
VOWEL_SOUND = re.compile(r"^(hour|honest|honou?r|heir)", re.IGNORECASE)


def article(word: str) -> str:
    """"an" before a vowel sound, else "a" (spelling rules with the common exceptions)."""
    w = word.strip()
    if VOWEL_SOUND.match(w):
        return "an"
    if not w or w[0].lower() not in "aeiou" or CONSONANT_SOUND.match(w):
        return "a"
    return "an"


def fill(template: str, class_name: str) -> str:
    """The template with the class name in place of ``{}`` (or ``{c}``), and an "a"/"an" right before
    it agreeing with the name ("a photo of an airplane.")."""
    def agree(m: re.Match[str]) -> str:
        art = article(class_name)
        return (art.capitalize() if m.group(1) == "A" else art) + " "

    return ARTICLE.sub(agree, template).replace("{c}", class_name).replace("{}", class_name)

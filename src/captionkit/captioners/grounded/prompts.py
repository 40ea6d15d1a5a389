"""Prompts that hand the facts to a text LLM, in a chat form and a completion form.

The completion form is the instruction / input / response layout used to fine-tune
completion models on (facts -> caption) pairs; the chat form suits instruct models such as
SmolLM2 through their own chat template. The few-shot examples below are written for this
project (invented facts and captions), so the model sees the register wanted without any
dataset caption being memorised into the package.
"""

from __future__ import annotations

import re

from captionkit.captioners.grounded.facts import Facts, facts_to_text
from captionkit.llm.base import ChatMessage
from captionkit.styles import get_style

SYSTEM = (
    "You write image captions from a list of facts that vision models extracted from the "
    "image. Use only the facts; do not invent objects that are not listed. Write natural "
    "English, not a list of identifiers."
)

#: (facts block, short caption): invented examples of the register wanted.
EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Objects: dog_1 (dog, confidence 0.91, colour: brown), frisbee_1 (frisbee, confidence "
        "0.62, colour: red).\nCounts: a brown dog and a red frisbee.\n"
        "Relationships: dog_1 is left of frisbee_1.\nSetting: outdoors, possibly a park.\n"
        "Draft caption: A brown dog is catching a frisbee in a park.",
        "A brown dog is chasing a red frisbee in a park.",
    ),
    (
        "Objects: person_1 (person, confidence 0.88, colour: blue), person_2 (person, "
        "confidence 0.80, colour: white), bicycle_1 (bicycle, confidence 0.71).\n"
        "Counts: two people and a bicycle.\nSetting: outdoors, street.\n"
        "Draft caption: Two people are riding a bike on the street.",
        "Two people stand beside a bicycle on a street.",
    ),
)

INSTRUCTION_PREFIX = "Facts about the image:"


def _instruction(style: str, prompt: str | None) -> str:
    return prompt or get_style(style).instruction.replace("for this image", "from the facts")


def _facts_block(facts: Facts, draft: str | None) -> str:
    """The facts, plus the template writer's sentence as a draft a small model can polish."""
    block = facts_to_text(facts)
    return f"{block}\nDraft caption: {draft}" if draft else block


def chat_messages(
    facts: Facts,
    style: str = "short",
    prompt: str | None = None,
    few_shot: bool = True,
    draft: str | None = None,
) -> list[ChatMessage]:
    """A chat for instruct models: system rules, optional examples, then this image."""
    instruction = _instruction(style, prompt)
    messages = [ChatMessage("system", SYSTEM)]
    if few_shot and style == "short" and prompt is None:
        for block, caption in EXAMPLES:
            messages.append(ChatMessage("user", f"{instruction}\n\n{INSTRUCTION_PREFIX}\n{block}"))
            messages.append(ChatMessage("assistant", caption))
    block = _facts_block(facts, draft)
    messages.append(ChatMessage("user", f"{instruction}\n\n{INSTRUCTION_PREFIX}\n{block}"))
    return messages


def completion_prompt(
    facts: Facts,
    style: str = "short",
    prompt: str | None = None,
    few_shot: bool = True,
    draft: str | None = None,
) -> str:
    """The instruction / input / response layout for completion (base) models."""
    instruction = _instruction(style, prompt)

    def block(facts_text: str, answer: str = "") -> str:
        return (
            f"### Instruction:\n{instruction}\n\n### Input:\n{facts_text}\n\n"
            f"### Response:\n{answer}"
        )

    shots = []
    if few_shot and style == "short" and prompt is None:
        shots = [block(b, c) + "\n\n" for b, c in EXAMPLES]
    return "".join(shots) + block(_facts_block(facts, draft))


_IDS = re.compile(r"\b([a-z]+(?:_[a-z]+)*)_\d+\b")


def clean_output(text: str) -> str:
    """Strip what small models leak: section headers, instance ids ("dog_1" -> "dog")."""
    text = text.split("###", 1)[0].strip()
    text = re.sub(r"^(?:response|caption)\s*:\s*", "", text, flags=re.IGNORECASE)
    return _IDS.sub(lambda m: m.group(1).replace("_", " "), text)

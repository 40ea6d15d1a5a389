"""Template and LLM writers on hand-made facts; the LLM is a scripted fake."""

from __future__ import annotations

import pytest

from captionkit.captioners.grounded import prompts
from captionkit.captioners.grounded.facts import Facts, ObjectFact, SceneFact, TextFact
from captionkit.captioners.grounded.grammar import (
    article,
    counted,
    join_list,
    number_word,
    sentence,
)
from captionkit.captioners.grounded.writers import LLMWriter, TemplateWriter
from captionkit.errors import ConfigError
from captionkit.llm.base import ChatMessage, TextLLM
from captionkit.types import Decoding


def obj(i: str, label: str, box, colours=(), score=0.9, area=0.2) -> ObjectFact:
    return ObjectFact(id=i, label=label, score=score, box=box, colours=list(colours), area=area)


def dog_facts(**kw) -> Facts:
    return Facts(
        width=300,
        height=200,
        objects=[obj("dog_1", "dog", (20, 50, 120, 150), ["black"])],
        counts={"dog": 1},
        **kw,
    )


def beach_people() -> Facts:
    objects = [obj(f"person_{i}", "person", (i * 40, 0, i * 40 + 30, 90)) for i in (1, 2)]
    objects.append(obj("surfboard_1", "surfboard", (0, 80, 60, 100), ["white"], 0.7, 0.05))
    return Facts(
        width=300,
        height=200,
        objects=objects,
        counts={"person": 2, "surfboard": 1},
        scene=SceneFact(indoor=False, indoor_confidence=0.9, place="beach", place_confidence=0.8),
        texts=[TextFact(text="SURF SHOP", score=0.9)],
    )


def test_grammar_helpers():
    assert article("apple") == "an" and article("dog") == "a"
    assert article("umbrella") == "an" and article("unicorn") == "a" and article("hour") == "an"
    assert counted("dog", 1, "black") == "a black dog"
    assert counted("dog", 2, "black") == "two dogs"
    assert counted("person", 7) == "a group of people"
    assert join_list(["a", "b", "c"]) == "a, b and c" and join_list(["a"]) == "a"
    assert number_word(3) == "three" and number_word(40) == "40"
    assert sentence("a dog") == "A dog."


def test_short_caption_has_subject_colour_activity_and_place():
    writer = TemplateWriter()
    assert writer.write(dog_facts(surface="grass")) == ["A black dog is running through the grass."]
    assert writer.write(beach_people()) == ["Two people are surfing on the beach."]
    assert TemplateWriter(colours=False).write(dog_facts()) == ["A dog is running."]


def test_nothing_detected_falls_back_to_colours():
    facts = Facts(width=10, height=10, image_colours=["green", "blue"])
    assert TemplateWriter().write(facts) == ["A scene in green and blue tones."]


@pytest.mark.parametrize("style", ["short", "detailed", "alt-text", "social", "training"])
def test_every_style_writes_something_faithful(style):
    from captionkit.captioners.grounded.rerank import hallucinated

    text = TemplateWriter().write(beach_people(), style)[0]
    assert text and not hallucinated(text, beach_people())


def test_style_specifics():
    w = TemplateWriter()
    detailed = w.write(beach_people(), "detailed")[0]
    assert "two people and a white surfboard" in detailed and "'SURF SHOP'" in detailed
    alt = w.write(beach_people(), "alt-text")[0]
    assert len(alt) < 125 and "SURF SHOP" in alt
    social = w.write(beach_people(), "social")[0]
    assert "#surfboard" in social and "#beach" in social
    training = w.write(dog_facts(surface="grass"), "training")[0]
    assert training == "black dog, grass, photo"
    with pytest.raises(ConfigError):
        w.write(dog_facts(), "sonnet")


def test_template_variants_for_several_candidates():
    texts = TemplateWriter().write(beach_people(), "short", n=3)
    assert len(texts) == len(set(texts)) >= 2


class ScriptedLLM(TextLLM):
    """Answers from a list, recording every chat and prompt it was given."""

    label = "scripted"

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.chats: list[list[ChatMessage]] = []
        self.prompts: list[str] = []
        self.configs: list[Decoding] = []

    def chat(self, conversations, config):
        self.chats += conversations
        self.configs.append(config)
        return [self.answers[i % len(self.answers)] for i in range(len(conversations))]

    def complete(self, prompts_, config):
        self.prompts += prompts_
        self.configs.append(config)
        return [self.answers[i % len(self.answers)] for i in range(len(prompts_))]


def test_llm_writer_chat_prompt_carries_the_facts_and_output_is_finished():
    llm = ScriptedLLM(["Here is a caption: a black dog_1 runs across the lawn.\nMore text"])
    out = LLMWriter(llm).write_batch([dog_facts()], "short")
    assert out == [["A black dog runs across the lawn."]]
    chat = llm.chats[0]
    assert chat[0].role == "system" and chat[-1].role == "user"
    assert "dog_1 (dog, confidence 0.90, colour: black)" in chat[-1].content
    assert "Draft caption: A black dog is running." in chat[-1].content
    assert len(chat) == 2 + 2 * len(prompts.EXAMPLES)  # few-shot pairs in between


def test_llm_writer_completion_layout():
    llm = ScriptedLLM([" A black dog runs. ### Instruction: junk"])
    out = LLMWriter(llm, prompt_format="completion", few_shot=False).write_batch([dog_facts()])
    assert out == [["A black dog runs."]]
    prompt = llm.prompts[0]
    assert (
        prompt.index("### Instruction:")
        < prompt.index("### Input:")
        < prompt.index("### Response:")
    )
    assert prompt.endswith("### Response:\n")


def test_faithful_rejects_hallucinations_and_falls_back_to_the_template():
    llm = ScriptedLLM(["A black dog chases a cat."])
    assert LLMWriter(llm).write_batch([dog_facts()]) == [["A black dog is running."]]
    assert LLMWriter(llm, faithful=False).write_batch([dog_facts()]) == [
        ["A black dog chases a cat."]
    ]


def test_several_candidates_are_sampled():
    llm = ScriptedLLM(["A black dog runs.", "A dog plays.", "A black dog runs."])
    out = LLMWriter(llm).write_batch([dog_facts(), dog_facts()], "short", n=3)
    assert out[0] == ["A black dog runs.", "A dog plays."]
    assert llm.configs[0].temperature > 0


def test_custom_prompt_replaces_the_style_instruction():
    llm = ScriptedLLM(["Dog."])
    LLMWriter(llm).write_batch([dog_facts()], "short", prompt="Name the animal.")
    assert llm.chats[-1][-1].content.startswith("Name the animal.")
    assert len(llm.chats[-1]) == 2  # no few-shot examples for a custom prompt


def scene_facts(objects, labels=(), place=None, **kw) -> Facts:
    counts: dict[str, int] = {}
    for o in objects:
        counts[o.label] = counts.get(o.label, 0) + 1
    scene = SceneFact(indoor=False, indoor_confidence=0.5, place=place, labels=list(labels))
    return Facts(width=300, height=200, objects=objects, counts=counts, scene=scene, **kw)


def test_sibling_classifier_labels_pool_their_evidence():
    person = [obj("person_1", "person", (10, 10, 100, 190))]
    # No single swimwear label reaches the cue threshold; together they say "water".
    labels = [("swimming trunks", 0.12), ("maillot", 0.09), ("bathing cap", 0.06)]
    assert TemplateWriter().write(scene_facts(person, labels))[0] == (
        "A person is playing in the water."
    )
    assert "water" not in TemplateWriter().write(scene_facts(person, labels[1:]))[0]


def test_objects_that_imply_a_place_beat_the_ground_colour():
    people = [
        obj("person_1", "person", (10, 10, 100, 190)),
        obj("boat_1", "boat", (0, 100, 300, 200), area=0.5),
    ]
    facts = scene_facts(people, surface="snow")  # white spray reads as snow
    assert TemplateWriter().write(facts)[0] == "A person is sitting in a boat in the water."


def test_confident_clothing_label_says_what_a_single_person_wears():
    person = [obj("person_1", "person", (10, 10, 100, 190), ["red"])]
    facts = scene_facts(person, [("sunglass", 0.25), ("sunglasses", 0.1)])
    assert TemplateWriter().write(facts)[0] == "A person wearing sunglasses is standing."
    weak = scene_facts(person, [("sunglass", 0.2)])
    assert TemplateWriter().write(weak)[0] == "A person in red is standing."
    two = scene_facts(person * 2, [("sunglass", 0.9)])
    assert "sunglasses" not in TemplateWriter().write(two)[0]  # not every one of them may


def test_default_activity_is_anchored_to_a_large_second_object():
    people = [
        obj("person_1", "person", (10, 10, 100, 190)),
        obj("person_2", "person", (110, 10, 200, 190)),
        obj("car_1", "car", (200, 50, 300, 200), area=0.25),
        obj("cup_1", "cup", (0, 0, 5, 5), area=0.001),
    ]
    assert TemplateWriter().write(scene_facts(people))[0] == (
        "Two people are standing next to a car."
    )


def test_caption_register_colours_and_groups():
    tan = [obj("dog_1", "dog", (10, 10, 100, 190), ["light brown"])]
    assert TemplateWriter().write(scene_facts(tan))[0] == "A brown dog is running."
    three = [obj(f"person_{i}", "person", (i, 0, i + 9, 9)) for i in range(3)]
    assert TemplateWriter().write(scene_facts(three))[0] == "A group of people are standing."


def test_climbing_takes_its_place_as_an_object():
    person = [obj("person_1", "person", (10, 10, 100, 190))]
    facts = scene_facts(person, [("cliff", 0.9)], place="cliff")
    assert TemplateWriter().write(facts)[0] == "A person is climbing a rock."

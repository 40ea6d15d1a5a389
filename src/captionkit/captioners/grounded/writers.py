"""Writers turn :class:`Facts` into caption text: a deterministic template, or a text LLM.

The template writer needs no model and never mentions anything that was not detected: it
picks the main subject (people first, then animals, then the largest object), adds a
plausible activity from what the subject is seen with (a person with a surfboard is surfing,
a dog with a frisbee is catching it) and a place phrase from the scene guess or the ground's
colour, in the plain "A black dog is running through the grass." register of caption
corpora. The LLM writer gives a text model the same facts (see :mod:`prompts`) and, when
``faithful``, rejects candidates that name COCO objects the detector did not see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from captionkit.captioners.grounded.coco_words import display_name, mentioned_classes, pluralise
from captionkit.captioners.grounded.facts import Facts, ObjectFact, setting_parts
from captionkit.captioners.grounded.grammar import (
    collapse_hedges,
    counted,
    dedupe_sentences,
    join_list,
    number_word,
    sentence,
)
from captionkit.captioners.grounded.phrasebook import (
    ACTIVITIES,
    ANIMALS,
    CUES,
    DEFAULT_ACTIVITY,
    OBJECT_PLACES,
    PLACE_PHRASES,
    WEARING,
)
from captionkit.captioners.grounded.relations import relation_key
from captionkit.styles import finish, get_style

if TYPE_CHECKING:
    from captionkit.captioners.grounded.writer_registry import WriterOptions
    from captionkit.llm.base import TextLLM
    from captionkit.types import Decoding

#: Where an LLM writer's caption ends: a blank line or the next few-shot example.
WRITER_STOP = ("\n\n", "###")

#: Classifier labels below this probability are not used as cues.
CUE_MIN = 0.2
#: Summed probability of clothing labels before a caption says what a person wears.
WEAR_MIN = 0.3
#: Share of the image a second object must cover to be named beside a default activity.
NEARBY_AREA = 0.1
#: Hashtag words where the class name makes a poor tag.
HASHTAGS = {"person": "people", "skis": "skiing", "sports ball": "ball", "dining table": "table"}
#: How sure the indoor/outdoor call must be before a caption says "outside" or "indoors".
OUTSIDE_SURE = 0.85


class Writer(Protocol):
    """Anything that writes ``n`` candidate captions per Facts for a style.

    ``prompt`` (the user's own instruction) and ``config`` (this call's decoding settings)
    come with every call, never stored, so one writer serves concurrent requests; writers
    without a model ignore them. Writers found by name (:mod:`writer_registry`) are built
    with ``from_options``.
    """

    def write_batch(
        self,
        facts: list[Facts],
        style: str = "short",
        n: int = 1,
        prompt: str | None = None,
        config: Decoding | None = None,
    ) -> list[list[str]]: ...


def simple_colour(name: str | None) -> str | None:
    """Caption-register colour: the basic colour term, without "dark"/"light".

    People describing a photo use the eleven basic colour words ("a brown dog"), not
    shades ("a tan dog"), and a measured shade is less certain than its basic hue anyway.
    """
    if not name:
        return None
    return name.replace("dark ", "").replace("light ", "")


#: Colours that fur and feathers plausibly have: a "green dog" is grass inside the box.
ANIMAL_COLOURS = ("black", "white", "brown", "tan", "black and white")
#: Colours of people's boxes that usually are skin, hair or background rather than clothes.
NOT_CLOTHES = ("grey", "brown", "tan")


def describe_colour(obj: ObjectFact) -> str:
    """The colour a caption would use for the object ("" when implausible or unknown).

    Two-tone black and white reads as such; for animals the first plausible fur colour
    among the measured ones wins; for people, clothing colours only.
    """
    names = [c for c in (simple_colour(c) for c in obj.colours) if c]
    if len(names) >= 2 and {names[0], names[1]} == {"black", "white"}:
        names.insert(0, "black and white")
    if obj.label in ANIMALS:
        names = [c for c in names if c in ANIMAL_COLOURS]
    elif obj.label == "person":
        names = [c for c in names[:1] if c not in NOT_CLOTHES]
    return names[0] if names else ""


def _pooled(facts: Facts, part: int) -> list[tuple[str | None, str | None]]:
    """Cue values (activity or place) whose classifier labels together reach CUE_MIN.

    ImageNet spreads one kind of scene over sibling labels ("swimming trunks", "maillot",
    "bathing cap" all say water), so the evidence for a value is the summed probability of
    the labels that imply it, not the best single label's.
    """
    if facts.scene is None:
        return []
    mass: dict[tuple[str | None, str | None], float] = {}
    for lb, p in facts.scene.labels:
        cue = CUES.get(lb)
        if cue and cue[part]:
            key = (cue[part], cue[0])
            mass[key] = mass.get(key, 0.0) + p
    ranked = sorted(mass.items(), key=lambda kv: -kv[1])
    return [(value, who) for (value, who), m in ranked if m >= CUE_MIN]


def cues(facts: Facts) -> list[tuple[str | None, str | None, str | None]]:
    """Phrase cues (subject, activity, place) the classifier's labels support, strongest first.

    Facts that passed the precision stage carry their accepted cues (and the one place a
    caption may state, see :func:`place_word`); older facts are read as before.
    """
    found: list[tuple[str | None, str | None, str | None]]
    if facts.precision is not None:
        found = [(c.subject, c.value, None) for c in facts.cues]
        return found
    found = [(who, act, None) for act, who in _pooled(facts, 1)]
    found += [(None, None, place) for place, _ in _pooled(facts, 2)]
    return found


def place_word(facts: Facts) -> str | None:
    """Where: a confident scene place, else a classifier cue, else a place the detected
    objects imply (a boat: water), else the ground's surface. After the precision stage,
    only the place it chose (each source above its calibrated confidence), or none."""
    if facts.precision is not None:
        return facts.place.word if facts.place else None
    scene = facts.scene
    if scene and scene.place and scene.place in PLACE_PHRASES:
        return scene.place
    for _, _, place in cues(facts):
        if place:
            return place
    for o in sorted(facts.objects, key=lambda o: -o.score):
        if o.label in OBJECT_PLACES:
            return OBJECT_PLACES[o.label]
    return facts.surface


def place_phrase(facts: Facts) -> str:
    """ "on the beach", "in the snow", "indoors" or "" when nothing is known."""
    word = place_word(facts)
    if word:
        return PLACE_PHRASES.get(word, f"in a {word}")
    scene = facts.scene
    if scene and scene.indoor is not None and scene.indoor_confidence >= OUTSIDE_SURE:
        return "indoors" if scene.indoor else "outside"
    return ""


def _main_label(facts: Facts) -> str | None:
    """People first unless animals clearly dominate the frame, then animals, then the largest."""
    if not facts.counts:
        return None
    area: dict[str, float] = {}
    for o in facts.objects:
        area[o.label] = area.get(o.label, 0.0) + o.area * o.score
    animals = {k: v for k, v in area.items() if k in ANIMALS}
    if "person" in area and (not animals or area["person"] * 2 >= max(animals.values())):
        return "person"
    pool = animals or area
    return max(pool, key=lambda k: pool[k])


def wearing(facts: Facts) -> str | None:
    """What the classifier is fairly sure a person wears ("sunglasses"), pooled by phrase."""
    if facts.scene is None:
        return None
    mass: dict[str, float] = {}
    for lb, p in facts.scene.labels:
        if lb in WEARING:
            mass[WEARING[lb]] = mass.get(WEARING[lb], 0.0) + p
    best = max(mass.items(), key=lambda kv: kv[1], default=None)
    return best[0] if best and best[1] >= WEAR_MIN else None


def subject_phrase(facts: Facts, label: str, colours: bool = True) -> str:
    n = facts.counts[label]
    first = next(o for o in facts.objects if o.label == label)
    name = display_name(label)
    if label == "person":
        if n == 1:
            clothes = wearing(facts)
            if clothes:
                return f"a person wearing {clothes}"
            colour = describe_colour(first) if colours else None
            worn = f" in {colour}" if colour else ""
            return f"a person{worn}"
        return counted(name, n)
    return counted(name, n, describe_colour(first) if colours and n == 1 else "")


def activities(facts: Facts, label: str) -> list[str]:
    """Plausible activities of ``label`` given what else was seen, most specific first."""
    others = sorted(
        (o for o in facts.objects if o.label != label), key=lambda o: -o.score * (o.area + 0.05)
    )
    found = [ACTIVITIES[(label, o.label)] for o in others if (label, o.label) in ACTIVITIES]
    found += [act for who, act, _ in cues(facts) if act and who in (None, label)]
    found = list(dict.fromkeys(found))
    if facts.precision is not None:  # "flying a kite" needs a kite the policy let through
        found = [a for a in found if all(c in facts.counts for c in mentioned_classes(a))]
    several = pluralise(label) if facts.counts.get(label, 0) > 1 else label
    defaults = DEFAULT_ACTIVITY.get(several) or DEFAULT_ACTIVITY.get(label)
    if defaults:
        found.append(defaults.get(place_word(facts), defaults[None]))
    return found


def defaults_of(facts: Facts, label: str) -> set[str]:
    """The fallback activities of ``label`` (said when nothing more specific is known)."""
    several = pluralise(label) if facts.counts.get(label, 0) > 1 else label
    table = DEFAULT_ACTIVITY.get(several) or DEFAULT_ACTIVITY.get(label) or {}
    return set(table.values())


def companion(facts: Facts, label: str, activity: str | None) -> str | None:
    """A dog seen with people joins the subject ("a person and a dog") when the activity
    fits both; other animals are more often misdetections than companions."""
    if label != "person" or activity not in (None, *DEFAULT_ACTIVITY["person"].values()):
        return None
    for o in facts.objects:
        if o.label == "dog":
            n = facts.counts[o.label]
            return counted(display_name(o.label), n, describe_colour(o) if n == 1 else "")
    return None


def motion_place(activity: str | None, place: str) -> str:
    """ "running through the grass" rather than "running in the grass", "climbing a rock"
    rather than "climbing on a rock"."""
    if activity == "running" and place.startswith("in the "):
        return "through the " + place[len("in the ") :]
    if activity == "climbing" and place.startswith("on "):
        return place[len("on ") :]
    return place


def nearby(facts: Facts, label: str) -> str | None:
    """A second detected object to anchor a default activity ("standing next to a car")."""
    others = [
        o
        for o in facts.objects
        if o.label != label and o.label not in ANIMALS and o.area >= NEARBY_AREA
    ]
    if not others:
        return None
    best = max(others, key=lambda o: o.score * o.area)
    return counted(display_name(best.label), 1)


#: How a sentence says a predicate where the bare form is not English ("is left of").
PREDICATE_PHRASES = {"left of": "to the left of", "right of": "to the right of"}
#: Time and lighting words as a sentence's adverbials.
TIME_PHRASES = {"daytime": "during the day", "night": "at night", "dusk": "at dusk"}
LIGHT_PHRASES = {"backlit": "against the light"}


def sorted_labels(facts: Facts) -> list[str]:
    """Labels in :meth:`Facts.count_phrases` order (most frequent first, then by name)."""
    return [lb for lb, _ in sorted(facts.counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def relation_sentences(facts: Facts, limit: int = 2) -> list[str]:
    """At most ``limit`` sentences about how objects stand, none saying the same thing twice.

    Facts built by this version hold no duplicates (see ``relations.relation_key``), but
    facts read back from older JSON may, so the writer checks again at the level it writes.
    """
    said: set[tuple[str, str, str]] = set()
    out = []
    for rel in facts.relations:
        a, b = facts.by_id(rel.subject), facts.by_id(rel.object)
        if not (a and b):
            continue
        key = relation_key(a.label, rel.predicate, b.label)
        if key in said:
            continue
        said.add(key)
        predicate = PREDICATE_PHRASES.get(rel.predicate, rel.predicate)
        if a.label == b.label:
            out.append(sentence(f"One {a.name} is {predicate} another"))
        else:
            out.append(sentence(f"The {a.name} is {predicate} the {b.name}"))
        if len(out) == limit:
            break
    return out


def setting_sentence(facts: Facts) -> str:
    """ "The setting appears to be outdoors, on the beach, during the day." — hedged once.

    Parts the scene model is unsure of carry their own "probably"/"possibly"; the sentence
    only says "appears to be" when no part does, so no claim is hedged twice.
    """
    parts = setting_parts(facts.scene)
    if not parts:
        return ""
    words = []
    for p in parts:
        text = p.text
        if p.kind == "place":
            text = PLACE_PHRASES.get(text, f"in a {text}")
        elif p.kind == "time":
            text = TIME_PHRASES.get(text, text)
        elif p.kind == "lighting":
            text = LIGHT_PHRASES.get(p.text.removesuffix(" light"), f"in {text}")
        words.append(f"{p.hedge} {text}".strip())
    verb = "is" if any(p.hedge for p in parts) else "appears to be"
    return sentence(f"The setting {verb} {', '.join(words)}")


class TemplateWriter:
    """Deterministic captions from facts, one sentence shape per style.

    ``colours`` off leaves colour adjectives out (the facts may still hold them).
    """

    def __init__(self, colours: bool = True) -> None:
        self.colours = colours

    # -- the core sentence -------------------------------------------------------------
    def short_variants(self, facts: Facts) -> list[str]:
        """Candidate one-sentence captions, the preferred first."""
        label = _main_label(facts)
        place = place_phrase(facts)
        if label is None:
            return [self._nothing_detected(facts, place)]
        subject = subject_phrase(facts, label, self.colours)
        acts = activities(facts, label)
        plural = facts.counts[label] > 1
        variants = []
        choices: list[str | None] = [*acts] or [None]  # None: no activity
        for act in choices:
            extra = companion(facts, label, act)
            subj = f"{subject} and {extra}" if extra else subject
            verb = "are" if plural or extra else "is"
            words = [subj]
            if act:
                words += [verb, act]
                near = nearby(facts, label) if act in defaults_of(facts, label) else None
                if near:
                    words.append(f"next to {near}")
            # A place the activity already says is not said twice; compared as a word, not a
            # substring: "doing gymnastics" says nothing of the gym it happens in.
            if place and not (act and place.split()[-1] in act.split()):
                words.append(motion_place(act, place))
            variants.append(sentence(" ".join(words)))
        others = [p for p in facts.count_phrases() if not p.endswith(display_name(label))]
        if not acts and others:
            variants.append(sentence(f"{subject} with {join_list(others[:2])} {place}".strip()))
        return list(dict.fromkeys(variants))

    def _nothing_detected(self, facts: Facts, place: str) -> str:
        if place and place != "indoors":
            return sentence(f"A scene {place}")
        if facts.image_colours:
            return sentence(f"A scene in {join_list(facts.image_colours)} tones")
        return "A photograph."

    # -- styles --------------------------------------------------------------------------
    def detailed(self, facts: Facts) -> str:
        parts = [self.short_variants(facts)[0]]
        if len(facts.counts) > 1 and facts.precision is None:
            parts.append(sentence(f"The image shows {join_list(facts.count_phrases())}"))
        elif len(facts.counts) > 1:  # say each object once: a repeat adds no fact, only risk
            said = set(mentioned_classes(parts[0]))
            rest = [p for lb, p in zip(sorted_labels(facts), facts.count_phrases(), strict=True)
                    if lb not in said]  # fmt: skip
            if rest:
                parts.append(sentence(f"The image also shows {join_list(rest)}"))
        parts += relation_sentences(facts, limit=2)
        parts.append(setting_sentence(facts))
        if facts.texts:
            parts.append(sentence(f"There is text reading '{facts.texts[0].text}'"))
        return " ".join(p for p in dict.fromkeys(parts) if p)

    def alt_text(self, facts: Facts) -> str:
        text = self.short_variants(facts)[0]
        if facts.texts:
            with_text = f"{text[:-1]}, with a sign reading '{facts.texts[0].text}'."
            if len(with_text) <= 125:
                text = with_text
        return text

    def social(self, facts: Facts) -> str:
        words = [HASHTAGS.get(lbl, display_name(lbl)) for lbl in facts.counts]
        if facts.surface:
            words.append(facts.surface)
        if facts.scene and facts.scene.place:
            words.append(facts.scene.place)
        tags = [f"#{w.replace(' ', '')}" for w in dict.fromkeys(words)][:4] or ["#photo"]
        tags.append("#photooftheday")
        return f"{self.short_variants(facts)[0]} {' '.join(tags)}"

    def training(self, facts: Facts) -> str:
        tags = []
        for label, n in sorted(facts.counts.items(), key=lambda kv: -kv[1]):
            first = next(o for o in facts.objects if o.label == label)
            name = display_name(label)
            if n == 1:
                colour = describe_colour(first) if self.colours and label != "person" else ""
                tags.append(f"{colour} {name}".strip())
            else:
                tags.append(f"{number_word(n) if n < 5 else 'many'} {pluralise(name)}")
        if facts.surface:
            tags.append(facts.surface)
        tags += [p.text for p in setting_parts(facts.scene)]  # tags carry no hedges
        if not facts.objects:
            tags += facts.image_colours
        tags.append("photo")
        return ", ".join(t for t in dict.fromkeys(tags) if t)

    def write(self, facts: Facts, style: str = "short", n: int = 1) -> list[str]:
        get_style(style)  # unknown style -> ConfigError
        if style == "short":
            texts = self.short_variants(facts)
        else:
            texts = [
                {
                    "detailed": self.detailed,
                    "alt-text": self.alt_text,
                    "social": self.social,
                    "training": self.training,
                }[style](facts)
            ]
        return [finish(tidy(t), style) for t in texts[: max(1, n)]]

    @classmethod
    def from_options(cls, options: WriterOptions) -> TemplateWriter:
        return cls(colours=options.colours)

    def write_batch(
        self,
        facts: list[Facts],
        style: str = "short",
        n: int = 1,
        prompt: str | None = None,
        config: Decoding | None = None,
    ) -> list[list[str]]:
        """Template captions; a free ``prompt`` and decoding settings do not apply to it."""
        return [self.write(f, style, n) for f in facts]


def tidy(text: str) -> str:
    """The last guard on any caption: no sentence twice, no hedge stacked on a hedge."""
    return dedupe_sentences(collapse_hedges(text))


class LLMWriter:
    """Captions written by a text LLM from the facts' text form.

    ``prompt_format`` "chat" uses the model's chat template (instruct models); "completion"
    uses the instruction/input/response layout (base or fine-tuned completion models).
    With ``draft``, the template's sentence is given as a draft to improve on: small models
    then polish a grounded sentence instead of paraphrasing identifiers.
    With ``faithful``, candidates that mention undetected COCO objects are dropped in favour
    of the template's caption, which never does.
    """

    def __init__(
        self,
        llm: TextLLM,
        prompt_format: str = "chat",
        few_shot: bool = True,
        faithful: bool = True,
        colours: bool = True,
        config: Decoding | None = None,
        draft: bool = True,
    ) -> None:
        from captionkit.types import Decoding

        self.llm = llm
        self.prompt_format = prompt_format
        self.few_shot = few_shot
        self.faithful = faithful
        self.draft = draft
        self.template = TemplateWriter(colours=colours)
        #: The settings used when a call passes none; never changed after construction, so
        #: calls with different settings can run at once.
        self.config = config or Decoding(max_new_tokens=60, temperature=0.0, stop=WRITER_STOP)

    def write_batch(
        self,
        facts: list[Facts],
        style: str = "short",
        n: int = 1,
        prompt: str | None = None,
        config: Decoding | None = None,
    ) -> list[list[str]]:
        """``n`` candidates per Facts; ``config`` (this call's settings) defaults to the
        writer's own. Several greedy candidates would be one text ``n`` times, so they are
        sampled (temperature 0.7, top-p 0.95)."""
        from captionkit.captioners.grounded import prompts
        from captionkit.captioners.grounded.rerank import hallucinated

        config = config or self.config
        if n > 1 and not config.do_sample:
            config = config.replace(do_sample=True, temperature=0.7, top_p=0.95)
        drafts = [self.template.write(f, style)[0] if self.draft else None for f in facts]
        jobs = [(f, d) for f, d in zip(facts, drafts, strict=True) for _ in range(n)]
        if self.prompt_format == "completion":
            raw = self.llm.complete(
                [prompts.completion_prompt(f, style, prompt, self.few_shot, d) for f, d in jobs],
                config,
            )
        else:
            raw = self.llm.chat(
                [prompts.chat_messages(f, style, prompt, self.few_shot, d) for f, d in jobs],
                config,
            )
        out: list[list[str]] = []
        for i, f in enumerate(facts):
            texts = [finish(tidy(prompts.clean_output(t)), style) for t in raw[i * n : (i + 1) * n]]
            texts = [t for t in dict.fromkeys(texts) if t]
            if self.faithful:
                texts = [t for t in texts if not hallucinated(t, f)]
            out.append(texts or self.template.write(f, style, 1))
        return out

    def close(self) -> None:
        self.llm.close()

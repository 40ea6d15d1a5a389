"""The COCO-80 class names, how English writes them, and which caption words mean them.

One list for the whole project: the grounded writer names detections with it, the re-ranker
checks candidates against it. The synonym lists follow the spirit of Rohrbach et al.'s CHAIR
synonyms but deliberately differ from the protocol table in ``captionkit.eval.coco_objects``
(which evaluation must reproduce exactly): here a colour word such as "orange" is not the fruit,
because the grounded writer itself says "an orange kite".
"""

from __future__ import annotations

import re
from functools import lru_cache

from captionkit.captioners.grounded.detectors import COCO80

#: The detectors' class list is the one list of COCO-80 names.
COCO_CLASSES: tuple[str, ...] = COCO80

#: The word a caption uses for a class (singular), where the COCO name reads oddly.
DISPLAY: dict[str, str] = {
    "dining table": "table",
    "potted plant": "plant",
    "tv": "television",
    "cell phone": "phone",
    "sports ball": "ball",
    "hair drier": "hair dryer",
    "motorcycle": "motorbike",
    "skis": "pair of skis",
}

#: Plurals English does not form by adding "s".
_IRREGULAR_PLURALS: dict[str, str] = {
    "person": "people",
    "man": "men",
    "woman": "women",
    "child": "children",
    "mouse": "mice",
    "knife": "knives",
    "sheep": "sheep",
    "pair of skis": "pairs of skis",
    "scissors": "scissors",
    "bus": "buses",
    "glass": "glasses",
    "wine glass": "wine glasses",
    "couch": "couches",
    "sandwich": "sandwiches",
    "toothbrush": "toothbrushes",
    "bench": "benches",
    "hot dog": "hot dogs",
    "skis": "skis",
}

#: Words a caption may use for each class (singular and plural, lower case).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": (
        "person", "people", "man", "men", "woman", "women", "boy", "boys", "girl", "girls",
        "child", "children", "kid", "kids", "baby", "babies", "toddler", "guy", "guys", "lady",
        "ladies", "player", "players", "skier", "skiers", "surfer", "surfers", "rider", "riders",
        "skateboarder", "snowboarder", "biker", "bikers", "cyclist", "cyclists", "climber",
        "climbers", "swimmer", "swimmers", "runner", "runners", "crowd", "adult", "adults",
        "teenager", "teenagers", "worker", "workers", "friends", "family", "couple", "gentleman",
        "dancer", "dancers", "someone", "he", "she", "wrestler", "wrestlers", "hiker", "hikers",
    ),
    "bicycle": ("bicycle", "bicycles", "bike", "bikes", "cycle", "dirt bike", "bmx", "unicycle",
                "unicycles", "trike", "minibike"),
    "car": ("car", "cars", "taxi", "jeep", "van", "vans", "suv", "automobile", "race car"),
    "motorcycle": ("motorcycle", "motorcycles", "motorbike", "motorbikes", "scooter", "dirt bike"),
    "airplane": ("airplane", "airplanes", "plane", "planes", "jet", "jets", "aircraft"),
    "bus": ("bus", "buses", "busses"),
    "train": ("train", "trains", "locomotive", "tram", "subway"),
    "truck": ("truck", "trucks", "pickup", "lorry"),
    "boat": ("boat", "boats", "ship", "ships", "canoe", "canoes", "kayak", "kayaks", "raft",
             "sailboat", "sailboats", "yacht", "ferry"),
    "traffic light": ("traffic light", "traffic lights", "traffic signal", "stop light"),
    "fire hydrant": ("fire hydrant", "hydrant", "hydrants"),
    "stop sign": ("stop sign", "stop signs"),
    "parking meter": ("parking meter", "parking meters"),
    "bench": ("bench", "benches"),
    "bird": ("bird", "birds", "seagull", "seagulls", "gull", "duck", "ducks", "pigeon",
             "pigeons", "goose", "geese", "swan", "parrot", "eagle", "crow"),
    "cat": ("cat", "cats", "kitten", "kittens", "kitty"),
    "dog": ("dog", "dogs", "puppy", "puppies", "pup", "poodle", "terrier", "retriever",
            "collie", "greyhound", "dachshund", "labrador", "spaniel", "beagle", "husky"),
    "horse": ("horse", "horses", "pony", "ponies", "foal"),
    "sheep": ("sheep", "lamb", "lambs", "ram"),
    "cow": ("cow", "cows", "cattle", "bull", "bulls", "calf", "ox", "oxen"),
    "elephant": ("elephant", "elephants"),
    "bear": ("bear", "bears"),
    "zebra": ("zebra", "zebras"),
    "giraffe": ("giraffe", "giraffes"),
    "backpack": ("backpack", "backpacks", "rucksack"),
    "umbrella": ("umbrella", "umbrellas", "parasol"),
    "handbag": ("handbag", "handbags", "purse", "purses"),
    "tie": ("tie", "ties", "necktie"),
    "suitcase": ("suitcase", "suitcases", "luggage"),
    "frisbee": ("frisbee", "frisbees"),
    "skis": ("ski", "skis"),
    "snowboard": ("snowboard", "snowboards"),
    "sports ball": ("ball", "balls", "football", "soccer ball", "basketball", "baseball",
                    "tennis ball", "volleyball", "rugby ball", "sports ball"),
    "kite": ("kite", "kites"),
    "baseball bat": ("baseball bat", "bat", "bats"),
    "baseball glove": ("baseball glove", "glove", "mitt"),
    "skateboard": ("skateboard", "skateboards"),
    "surfboard": ("surfboard", "surfboards", "surf board"),
    "tennis racket": ("tennis racket", "racket", "rackets", "racquet"),
    "bottle": ("bottle", "bottles"),
    "wine glass": ("wine glass", "wine glasses", "wineglass"),
    "cup": ("cup", "cups", "mug", "mugs"),
    "fork": ("fork", "forks"),
    "knife": ("knife", "knives"),
    "spoon": ("spoon", "spoons"),
    "bowl": ("bowl", "bowls"),
    "banana": ("banana", "bananas"),
    "apple": ("apple", "apples"),
    "sandwich": ("sandwich", "sandwiches", "burger", "hamburger"),
    "orange": ("oranges",),  # "orange" alone is usually the colour
    "broccoli": ("broccoli",),
    "carrot": ("carrot", "carrots"),
    "hot dog": ("hot dog", "hot dogs", "hotdog"),
    "pizza": ("pizza", "pizzas"),
    "donut": ("donut", "donuts", "doughnut", "doughnuts"),
    "cake": ("cake", "cakes", "cupcake"),
    "chair": ("chair", "chairs", "stool", "stools"),
    "couch": ("couch", "couches", "sofa", "sofas"),
    "potted plant": ("potted plant", "houseplant", "plant pot", "flowerpot"),
    "bed": ("bed", "beds"),
    "dining table": ("table", "tables", "dining table", "desk"),
    "toilet": ("toilet", "toilets"),
    "tv": ("tv", "television", "televisions", "tvs"),
    "laptop": ("laptop", "laptops", "computer", "notebook computer"),
    "mouse": ("computer mouse",),  # "mouse" alone is more often the animal
    "remote": ("remote", "remotes", "remote control"),
    "keyboard": ("keyboard", "keyboards"),
    "cell phone": ("phone", "phones", "cell phone", "cellphone", "mobile phone", "smartphone"),
    "microwave": ("microwave", "microwaves"),
    "oven": ("oven", "ovens", "stove"),
    "toaster": ("toaster",),
    "sink": ("sink", "sinks"),
    "refrigerator": ("refrigerator", "fridge", "refrigerators"),
    "book": ("book", "books"),
    "clock": ("clock", "clocks"),
    "vase": ("vase", "vases"),
    "scissors": ("scissors",),
    "teddy bear": ("teddy bear", "teddy bears", "teddy", "stuffed animal"),
    "hair drier": ("hair drier", "hair dryer", "blow dryer"),
    "toothbrush": ("toothbrush", "toothbrushes"),
}  # fmt: skip


def display_name(label: str) -> str:
    """The singular word a caption uses for a detector label ("dining table" -> "table")."""
    return DISPLAY.get(label, label)


def pluralise(noun: str) -> str:
    """English plural of a (possibly multi-word) noun; the last word carries the plural."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR_PLURALS:
        plural = _IRREGULAR_PLURALS[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        plural = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}" if head else plural


@lru_cache(maxsize=1)
def _pattern() -> tuple[re.Pattern[str], dict[str, str]]:
    """One alternation over every synonym, longest first so "hot dog" wins over "dog"."""
    word_to_class: dict[str, str] = {}
    for cls, words in SYNONYMS.items():
        for word in words:
            word_to_class.setdefault(word, cls)
    alternation = "|".join(re.escape(w) for w in sorted(word_to_class, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternation})\b"), word_to_class


#: "playing baseball" names a game, not a ball: the ball need not be in sight, and CHAIR
#: (``captionkit.eval.chair``) does not count the game's name as an object either.
_GAMES = re.compile(r"\bplaying (?:baseball|basketball|volleyball|football)\b")


def mentioned_classes(text: str) -> list[str]:
    """COCO classes a caption mentions, in order of first mention, each once.

    Used by the re-ranker (reward detected, penalise undetected objects), by the precision
    stage's check that an activity names no object the policy left out, and by tests.
    A game's name after "playing" is not an object mention (see :data:`_GAMES`).
    """
    pattern, word_to_class = _pattern()
    found: list[str] = []
    for match in pattern.finditer(_GAMES.sub("playing", text.lower())):
        cls = word_to_class[match.group(0)]
        if cls not in found:
            found.append(cls)
    return found

"""The COCO-80 object words with their synonyms, as CHAIR uses them (data, no logic).

The table is the synonym list of Rohrbach, Hendricks et al., "Object Hallucination in Image
Captioning" (EMNLP 2018; ``data/synonyms.txt`` of github.com/LisaAnne/Hallucination, BSD-2),
with its duplicate entries removed and "iPhone" lower-cased. Each key is the COCO category
name; the first word of each upstream line is that name. Captioners may import this module
(``eval`` is a lower floor), e.g. to map detector labels to caption words.
"""

from __future__ import annotations

COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": (
        "girl", "boy", "man", "woman", "kid", "child", "chef", "baker", "people", "adult",
        "rider", "children", "baby", "worker", "passenger", "sister", "biker", "policeman",
        "cop", "officer", "lady", "cowboy", "bride", "groom", "male", "female", "guy",
        "traveler", "mother", "father", "gentleman", "pitcher", "player", "skier",
        "snowboarder", "skater", "skateboarder", "foreigner", "caller", "offender", "coworker",
        "trespasser", "patient", "politician", "soldier", "grandchild", "serviceman", "walker",
        "drinker", "doctor", "bicyclist", "thief", "buyer", "teenager", "student", "camper",
        "driver", "solider", "hunter", "shopper", "villager",
    ),
    "bicycle": ("bike", "unicycle", "minibike", "trike"),
    "car": (
        "automobile", "van", "minivan", "sedan", "suv", "hatchback", "cab", "jeep", "coupe",
        "taxicab", "limo", "taxi",
    ),
    "motorcycle": ("scooter", "motor bike", "motor cycle", "motorbike", "moped"),
    "airplane": (
        "jetliner", "plane", "air plane", "monoplane", "aircraft", "jet", "airbus", "biplane",
        "seaplane",
    ),
    "bus": ("minibus", "trolley"),
    "train": ("locomotive", "tramway", "caboose"),
    "truck": ("pickup", "lorry", "hauler", "firetruck"),
    "boat": (
        "ship", "liner", "sailboat", "motorboat", "dinghy", "powerboat", "speedboat", "canoe",
        "skiff", "yacht", "kayak", "catamaran", "pontoon", "houseboat", "vessel", "rowboat",
        "trawler", "ferryboat", "watercraft", "tugboat", "schooner", "barge", "ferry",
        "sailboard", "paddleboat", "lifeboat", "freighter", "steamboat", "riverboat",
        "battleship", "steamship",
    ),
    "traffic light": (
        "street light", "traffic signal", "stop light", "streetlight", "stoplight",
    ),
    "fire hydrant": ("hydrant",),
    "stop sign": (),
    "parking meter": (),
    "bench": ("pew",),
    "bird": (
        "ostrich", "owl", "seagull", "goose", "duck", "parakeet", "falcon", "robin", "pelican",
        "waterfowl", "heron", "hummingbird", "mallard", "finch", "pigeon", "sparrow", "seabird",
        "osprey", "blackbird", "fowl", "shorebird", "woodpecker", "egret", "chickadee", "quail",
        "bluebird", "kingfisher", "buzzard", "willet", "gull", "swan", "bluejay", "flamingo",
        "cormorant", "parrot", "loon", "gosling", "waterbird", "pheasant", "rooster",
        "sandpiper", "crow", "raven", "turkey", "oriole", "cowbird", "warbler", "magpie",
        "peacock", "cockatiel", "lorikeet", "puffin", "vulture", "condor", "macaw", "peafowl",
        "cockatoo", "songbird",
    ),
    "cat": ("kitten", "feline", "tabby"),
    "dog": (
        "puppy", "beagle", "pup", "chihuahua", "schnauzer", "dachshund", "rottweiler", "canine",
        "pitbull", "collie", "pug", "terrier", "poodle", "labrador", "doggie", "doberman",
        "mutt", "doggy", "spaniel", "bulldog", "sheepdog", "weimaraner", "corgi", "cocker",
        "greyhound", "retriever", "brindle", "hound", "whippet", "husky",
    ),
    "horse": (
        "colt", "pony", "racehorse", "stallion", "equine", "mare", "foal", "palomino",
        "mustang", "clydesdale", "bronc", "bronco",
    ),
    "sheep": ("lamb", "ram", "goat", "ewe"),
    "cow": (
        "cattle", "oxen", "ox", "calf", "holstein", "heifer", "buffalo", "bull", "zebu", "bison",
    ),
    "elephant": (),
    "bear": ("panda",),
    "zebra": (),
    "giraffe": (),
    "backpack": ("knapsack",),
    "umbrella": (),
    "handbag": ("wallet", "purse", "briefcase"),
    "tie": ("bow", "bow tie"),
    "suitcase": ("suit case", "luggage"),
    "frisbee": (),
    "skis": ("ski",),
    "snowboard": (),
    "sports ball": ("ball",),
    "kite": (),
    "baseball bat": (),
    "baseball glove": (),
    "skateboard": (),
    "surfboard": ("longboard", "skimboard", "shortboard", "wakeboard"),
    "tennis racket": ("racket",),
    "bottle": (),
    "wine glass": (),
    "cup": (),
    "fork": (),
    "knife": ("pocketknife", "knive"),
    "spoon": (),
    "bowl": ("container",),
    "banana": (),
    "apple": (),
    "sandwich": ("burger", "sub", "cheeseburger", "hamburger"),
    "orange": (),
    "broccoli": (),
    "carrot": (),
    "hot dog": (),
    "pizza": (),
    "donut": ("doughnut", "bagel"),
    "cake": ("cheesecake", "cupcake", "shortcake", "coffeecake", "pancake"),
    "chair": ("seat", "stool"),
    "couch": ("sofa", "recliner", "futon", "loveseat", "settee", "chesterfield"),
    "potted plant": ("houseplant",),
    "bed": (),
    "dining table": ("table", "desk"),
    "toilet": ("urinal", "commode", "lavatory", "potty"),
    "tv": ("monitor", "televison", "television"),
    "laptop": ("computer", "notebook", "netbook", "lenovo", "macbook", "laptop computer"),
    "mouse": (),
    "remote": (),
    "keyboard": (),
    "cell phone": (
        "mobile phone", "phone", "cellphone", "telephone", "phon", "smartphone", "iphone",
    ),
    "microwave": (),
    "oven": ("stovetop", "stove", "stove top oven"),
    "toaster": (),
    "sink": (),
    "refrigerator": ("fridge", "freezer"),
    "book": (),
    "clock": (),
    "vase": (),
    "scissors": (),
    "teddy bear": ("teddybear",),
    "hair drier": ("hairdryer",),
    "toothbrush": (),
}  # fmt: skip

#: Two-word phrases read as one word before synonym lookup (upstream's ``coco_double_words``).
DOUBLE_WORDS: tuple[str, ...] = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal",
    "stop light", "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball",
    "baseball bat", "baseball glove", "tennis racket", "wine glass", "hot dog", "cell phone",
    "mobile phone", "teddy bear", "hair drier", "potted plant", "bow tie", "laptop computer",
    "stove top oven", "home plate",
)  # fmt: skip

#: "baby bird" is a bird, not a person; "passenger jet" is a jet (upstream's special cases).
ANIMAL_WORDS = (
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
    "animal", "cub",
)  # fmt: skip
VEHICLE_WORDS = ("jet", "train")


def word_to_category() -> dict[str, str]:
    """Every object word and synonym -> its COCO category name."""
    table: dict[str, str] = {}
    for category, synonyms in COCO_SYNONYMS.items():
        table.setdefault(category, category)
        for word in synonyms:
            table.setdefault(word, category)
    return table

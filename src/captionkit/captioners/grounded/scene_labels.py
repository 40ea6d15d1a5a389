"""Which ImageNet-1k classes say where a photo was taken: place words and indoor/outdoor votes.

ImageNet is an object taxonomy, not a scene one (no Places365 model ships on PyPI), but about
a quarter of its classes only occur in one kind of setting: a ``seashore`` or ``alp`` is a
place outright, a ``snowmobile`` implies snow, a ``dishwasher`` a kitchen. Each entry below
names a place word (or None: setting evidence only), the setting it implies and a weight (how
strongly the class implies that setting; 1.0 for places themselves). Keys are the first
synonym of each line of the model's label file; a test checks that every key exists there.
"""

from __future__ import annotations

OUT, IN = "outdoor", "indoor"

# place word -> (setting, weight, ImageNet first-synonyms)
# fmt: off
_TABLE: dict[str, tuple[str, float, tuple[str, ...]]] = {
    # --- outdoor places ---
    "mountain": (OUT, 1.0, ("alp", "volcano")),
    "cliff": (OUT, 1.0, ("cliff", "cliff dwelling")),
    "valley": (OUT, 1.0, ("valley",)),
    "beach": (OUT, 1.0, ("seashore", "sandbar")),
    "coast": (OUT, 1.0, ("promontory", "breakwater", "beacon")),
    "lakeside": (OUT, 1.0, ("lakeside",)),
    "reef": (OUT, 1.0, ("coral reef",)),
    "geyser": (OUT, 1.0, ("geyser",)),
    "water": (
        OUT,
        0.8,
        ("scuba diver", "snorkel", "speedboat", "canoe", "paddle", "catamaran", "trimaran",
         "schooner", "yawl", "liner", "fireboat", "lifeboat", "gondola", "container ship",
         "submarine", "wreck", "aircraft carrier", "paddlewheel", "amphibian"),
    ),
    "waterfront": (OUT, 0.9, ("dock", "pier", "boathouse")),
    "bridge": (OUT, 1.0, ("suspension bridge", "steel arch bridge", "viaduct")),
    "dam": (OUT, 1.0, ("dam",)),
    "snow": (OUT, 0.9, ("ski", "ski mask", "snowmobile", "dogsled", "bobsled", "snowplow")),
    "park": (OUT, 0.8, ("park bench", "fountain")),
    "playground": (OUT, 0.8, ("swing",)),
    "garden": (OUT, 0.7, ("patio", "lawn mower", "birdhouse", "picket fence", "maze")),
    "street": (
        OUT,
        0.8,
        ("street sign", "traffic light", "parking meter", "cab", "trolleybus", "streetcar",
         "police van", "moving van", "minibus", "mailbox", "manhole cover", "fire engine",
         "garbage truck", "tow truck", "jinrikisha", "motor scooter", "moped", "limousine",
         "school bus", "pickup", "convertible", "sports car", "Model T", "beach wagon",
         "minivan", "trailer truck", "recreational vehicle", "ambulance", "pay-phone"),
    ),
    "field": (
        OUT,
        0.8,
        ("rapeseed", "daisy", "hay", "corn", "ear", "harvester", "thresher", "plow", "tractor",
         "worm fence", "oxcart"),
    ),
    "farm": (OUT, 0.9, ("barn", "apiary")),
    "woods": (
        OUT,
        0.7,
        ("agaric", "bolete", "hen-of-the-woods", "earthstar", "stinkhorn", "coral fungus",
         "gyromitra", "buckeye", "acorn"),
    ),
    "campsite": (OUT, 0.8, ("mountain tent", "yurt")),
    "racetrack": (OUT, 0.8, ("go-kart", "racer")),
    "golf course": (OUT, 0.9, ("golf ball", "golfcart")),
    "sports field": (
        OUT,
        0.5,
        ("ballplayer", "baseball", "football helmet", "rugby ball", "soccer ball", "croquet ball"),
    ),
    # --- indoor places ---
    "kitchen": (
        IN,
        0.9,
        ("refrigerator", "microwave", "stove", "dishwasher", "Dutch oven", "toaster",
         "espresso maker", "Crock Pot", "frying pan", "wok", "waffle iron", "rotisserie",
         "mixing bowl", "measuring cup", "spatula", "ladle", "wooden spoon", "plate rack",
         "dishrag"),
    ),
    "dining room": (IN, 0.6, ("dining table", "plate", "soup bowl", "tray")),
    "restaurant": (IN, 0.9, ("restaurant", "menu")),
    "bathroom": (
        IN,
        0.9,
        ("bathtub", "shower curtain", "toilet seat", "washbasin", "medicine chest",
         "shower cap", "bath towel", "toilet tissue", "soap dispenser"),
    ),
    "bedroom": (
        IN,
        0.9,
        ("four-poster", "quilt", "pillow", "crib", "cradle", "bassinet", "wardrobe",
         "chiffonier"),
    ),
    "living room": (
        IN,
        0.8,
        ("studio couch", "home theater", "entertainment center", "television", "table lamp",
         "lampshade", "window shade", "fire screen", "radiator", "upright", "grand piano"),
    ),
    "office": (
        IN,
        0.8,
        ("desk", "desktop computer", "monitor", "computer keyboard", "mouse", "laptop",
         "printer", "photocopier", "file", "binder", "modem", "space bar",
         "typewriter keyboard"),
    ),
    "library": (IN, 1.0, ("library", "bookcase")),
    "shop": (
        IN,
        0.9,
        ("bookshop", "grocery store", "toyshop", "barbershop", "butcher shop", "confectionery",
         "shoe shop", "tobacco shop", "bakery", "shopping basket", "vending machine"),
    ),
    "gym": (
        IN,
        0.5,
        ("dumbbell", "barbell", "horizontal bar", "parallel bars", "balance beam",
         "punching bag"),
    ),
    "stage": (IN, 0.7, ("stage", "theater curtain", "spotlight")),
    "church": (IN, 0.8, ("altar", "organ", "vestment")),
}
# fmt: on

#: Classes photographed almost only outdoors but naming no place.
_OUT_ONLY = (
    "chainlink fence", "stone wall", "mountain bike", "unicycle", "bicycle-built-for-two",
    "jeep", "half track", "parachute", "airship", "balloon", "flagpole", "totem pole",
    "obelisk", "megalith", "triumphal arch", "castle", "palace", "monastery", "mosque",
    "church", "stupa", "bell cote", "dome", "water tower", "radio telescope", "solar dish",
    "thatch", "tile roof", "maypole", "sundial", "horse cart", "sorrel", "tricycle",
    "swimming trunks", "bikini", "sunscreen",
)  # fmt: skip
#: Index ranges (0-based, end exclusive) of wild birds and wild or farm mammals: outdoor hints.
OUT_RANGES = ((7, 25), (80, 101), (127, 147), (269, 281), (286, 298), (339, 355))
#: Classes photographed almost only indoors but naming no place.
_IN_ONLY = (
    "sliding door", "shoji", "window screen", "vacuum", "iron", "washer", "hamper",
    "electric fan", "space heater", "wall clock", "jigsaw puzzle", "sewing machine", "teddy",
    "Christmas stocking", "prayer rug", "pool table", "pajama", "rocking chair",
    "microphone", "candle",
)  # fmt: skip


def build_index() -> dict[str, tuple[str | None, str, float]]:
    """ImageNet first-synonym -> (place word or None, setting, weight)."""
    index: dict[str, tuple[str | None, str, float]] = {}
    for place, (setting, weight, labels) in _TABLE.items():
        for label in labels:
            index[label] = (place, setting, weight)
    for label in _OUT_ONLY:
        index.setdefault(label, (None, OUT, 0.5))
    for label in _IN_ONLY:
        index.setdefault(label, (None, IN, 0.5))
    return index


SCENE_INDEX = build_index()

"""Phrase tables of the template writer: activities, classifier cues and place phrases.

Data only, kept apart from the writer's logic so they can be reviewed and extended in one
place. Every phrase is triggered by something a model saw (a detected object, an ImageNet
label of the scene classifier, a place word, the ground's colour); none is learnt from a
caption dataset.
"""

from __future__ import annotations

#: "animal" is the generic word the precision stage may give an animal it cannot name.
ANIMALS = (
    "dog", "cat", "horse", "bird", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal",
)  # fmt: skip

#: (subject, object seen with it) -> what the subject is probably doing, in -ing form.
ACTIVITIES: dict[tuple[str, str], str] = {
    ("person", "surfboard"): "surfing",
    ("person", "skateboard"): "riding a skateboard",
    ("person", "skis"): "skiing",
    ("person", "snowboard"): "snowboarding",
    ("person", "bicycle"): "riding a bike",
    ("person", "motorcycle"): "riding a motorbike",
    ("person", "horse"): "riding a horse",
    ("person", "kite"): "flying a kite",
    ("person", "frisbee"): "playing with a frisbee",
    ("person", "sports ball"): "playing with a ball",
    ("person", "tennis racket"): "playing tennis",
    ("person", "baseball bat"): "playing baseball",
    ("person", "baseball glove"): "playing baseball",
    ("person", "boat"): "sitting in a boat",
    ("person", "umbrella"): "holding an umbrella",
    ("person", "cell phone"): "talking on a phone",
    ("person", "bench"): "sitting on a bench",
    ("person", "couch"): "sitting on a couch",
    ("person", "chair"): "sitting in a chair",
    ("person", "laptop"): "using a laptop",
    ("person", "book"): "reading a book",
    ("person", "dining table"): "sitting at a table",
    ("dog", "frisbee"): "catching a frisbee",
    ("dog", "sports ball"): "playing with a ball",
    ("dog", "couch"): "lying on a couch",
    ("dog", "bed"): "lying on a bed",
    ("cat", "couch"): "lying on a couch",
    ("cat", "bed"): "lying on a bed",
}

#: (subject, object detected but not named) -> what it still says the subject does, in words
#: that name no object: a chair too unsure to name still says "sitting", unsure skis still
#: say "skiing". Used only above ``Policy.hedged_activity_min`` (see ``precision``).
HEDGED_ACTIVITIES: dict[tuple[str, str], str] = {
    ("person", "chair"): "sitting",
    ("person", "couch"): "sitting",
    ("person", "bench"): "sitting",
    ("person", "dining table"): "sitting",
    ("person", "skis"): "skiing",
    ("person", "snowboard"): "snowboarding",
    ("person", "skateboard"): "skateboarding",
    ("person", "surfboard"): "surfing",
    ("person", "tennis racket"): "playing tennis",
    ("person", "baseball bat"): "playing baseball",
    ("person", "baseball glove"): "playing baseball",
    ("person", "bicycle"): "cycling",
    ("dog", "frisbee"): "jumping",
}

#: Detected objects that are only ever used in one kind of place: a boat is on water, skis
#: are on snow. Trusted over the ground's colour (white surf reads as snow, a grey lake as
#: nothing), below a scene or classifier place.
OBJECT_PLACES: dict[str, str] = {
    "boat": "water",
    "surfboard": "water",
    "skis": "snow",
    "snowboard": "snow",
}

#: What a subject does by default, by surface (None: any other or unknown surface).
DEFAULT_ACTIVITY: dict[str, dict[str | None, str]] = {
    "person": {"water": "playing", "snow": "playing", None: "standing"},
    "dog": {"water": "swimming", None: "running"},
    "dogs": {"water": "swimming", None: "playing"},
    "horse": {None: "standing"},
    "bird": {"water": "swimming", None: "standing"},
}

#: ImageNet label (first synonym) -> (subject it applies to, activity, place word).
#: Labels of the scene classifier that imply an activity or a place more directly than the
#: place table does; each fires only above a probability threshold.
CUES: dict[str, tuple[str | None, str | None, str | None]] = {
    "ski": ("person", "skiing", "snow"),
    "ski mask": ("person", None, "snow"),
    "snowmobile": ("person", "riding a snowmobile", "snow"),
    "dogsled": ("dog", "pulling a sled", "snow"),
    "bobsled": ("person", None, "snow"),
    "maillot": ("person", None, "water"),
    "swimming trunks": ("person", None, "water"),
    "bikini": ("person", None, "water"),
    "bathing cap": ("person", "swimming", "water"),
    "snorkel": ("person", "swimming", "water"),
    "scuba diver": ("person", "diving", "water"),
    "paddle": ("person", "paddling a boat", "water"),
    "canoe": ("person", "paddling a canoe", "water"),
    "horse cart": ("horse", "pulling a cart", None),
    "oxcart": ("cow", "pulling a cart", None),
    "volleyball": ("person", "playing volleyball", None),
    "soccer ball": ("person", "playing soccer", "field"),
    "rugby ball": ("person", "playing rugby", "field"),
    "football helmet": ("person", "playing football", "field"),
    "basketball": ("person", "playing basketball", None),
    "ballplayer": ("person", "playing baseball", "field"),
    "racket": ("person", "playing tennis", None),
    "tennis ball": (None, "playing with a ball", None),
    "croquet ball": (None, "playing with a ball", None),
    "mountain bike": ("person", "riding a bike", None),
    "bicycle-built-for-two": ("person", "riding a bike", None),
    "tricycle": ("person", "riding a tricycle", None),
    "unicycle": ("person", "riding a unicycle", None),
    "swing": ("person", "playing on a swing", "playground"),
    "horizontal bar": ("person", "doing gymnastics", None),
    "parallel bars": ("person", "doing gymnastics", None),
    "balance beam": ("person", "doing gymnastics", None),
    "acoustic guitar": ("person", "playing a guitar", None),
    "electric guitar": ("person", "playing a guitar", None),
    "cello": ("person", "playing music", None),
    "violin": ("person", "playing music", None),
    "cornet": ("person", "playing music", None),
    "trombone": ("person", "playing music", None),
    "sax": ("person", "playing music", None),
    "drum": ("person", "playing music", None),
    "cliff": ("person", "climbing", "cliff"),
    "fountain": (None, "playing in a fountain", None),
    "seashore": (None, None, "beach"),
    "sandbar": (None, None, "beach"),
    "lakeside": (None, None, "lakeside"),
    "alp": (None, None, "mountain"),
}

#: ImageNet clothing and accessory labels -> how a caption says a person wears them.
#: Only neutral items: garments that people read as a gender cue are left out on purpose.
WEARING: dict[str, str] = {
    "sunglass": "sunglasses", "sunglasses": "sunglasses", "cowboy hat": "a cowboy hat",
    "sombrero": "a hat", "crash helmet": "a helmet", "football helmet": "a helmet",
    "jersey": "a T-shirt", "sweatshirt": "a sweatshirt", "cardigan": "a sweater",
    "suit": "a suit", "military uniform": "a uniform", "lab coat": "a lab coat",
    "fur coat": "a fur coat", "trench coat": "a coat", "poncho": "a poncho",
    "kimono": "a kimono", "apron": "an apron", "jean": "jeans", "backpack": "a backpack",
    "cowboy boot": "cowboy boots", "ski mask": "a ski mask", "bow tie": "a bow tie",
    "Windsor tie": "a tie", "bolo tie": "a tie", "wig": "a wig",
    "academic gown": "a graduation gown", "bathing cap": "a swimming cap",
    "knee pad": "knee pads", "bulletproof vest": "a vest",
}  # fmt: skip

#: Place word (scene classifier or cue) -> the phrase a caption uses.
PLACE_PHRASES: dict[str, str] = {
    "beach": "on the beach", "snow": "in the snow", "water": "in the water",
    "grass": "in the grass", "sand": "on the sand", "cliff": "on a rock",
    "mountain": "on a mountain", "valley": "in a valley", "coast": "on the coast",
    "lakeside": "by a lake", "waterfront": "by the water", "reef": "on a reef",
    "geyser": "near a geyser", "bridge": "on a bridge", "dam": "near a dam",
    "park": "in a park", "playground": "at a playground", "garden": "in a garden",
    "street": "on the street", "field": "in a field", "sports field": "on a field",
    "farm": "on a farm", "woods": "in the woods", "campsite": "at a campsite",
    "racetrack": "on a track", "golf course": "on a golf course", "gym": "in a gym",
    "stage": "on a stage", "shop": "in a shop", "kitchen": "in a kitchen",
    "dining room": "in a dining room", "bedroom": "in a bedroom", "bathroom": "in a bathroom",
    "living room": "in a living room", "restaurant": "in a restaurant",
    "office": "in an office", "library": "in a library", "church": "in a church",
}  # fmt: skip

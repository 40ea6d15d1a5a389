"""The Python PTB tokeniser against the Stanford jar pycocoevalcap runs."""

from __future__ import annotations

import io
from contextlib import redirect_stderr

import pytest

from captionkit.eval.metrics import ptb_tokenize

from .conftest import java_available

EDGE_CASES = [
    "A DOG RUNS THROUGH THE GRASS.",
    "  A dog,running;through: the grass!!  ",
    "The dog's owner's hat isn't there -- it's gone...",
    'Two kids (a boy and a girl) play "tag" in the park.',
    "A man [in red] {smiling} <waves> at the camera?",
    "Ein Hund läuft über die Straße.",
    "Un garçon à vélo près d'une fontaine.",
    "Собака бежит по траве.",
    "一只狗在草地上奔跑。",
    "The café's crème brûlée costs €5 or £4.50 (¢99).",
    "A 3-year-old boy's 2nd birthday at 5:30 p.m. on 12/25/2019.",
    "The U.S. team wins 3-2 vs. Canada.",
    "A woman—wearing a hat—walks by.",
    "She said, ‘hello’ and “goodbye”.",
    "It’s a dog’s life, isn’t it?",
    "Is this the end?! Yes!!! No???",
    "...",
    "",
    "Mr. and Mrs. Smith walk with Dr. Jones in St. Louis, Mo. today.",
    "e-mail me at john.doe@example.com or visit www.example.com/page now",
    "The 1990s were great; the '80s too.",
    "rock'n'roll fans y'all c'mon, gonna wanna gimme CANNOT",
    "50% off! Only $9.99 at 7-Eleven.",
    "Dogs' bowls and the boys' bikes.",
    "A ½ eaten pie and ¼ cup",
    "A dog.A cat. dog.cat.mouse I.E. e.g. U.S.A. x.",
    'He was like,"wow" ok.. a.b',
    "a   dog\twith    tabs",
    "A man with a hat;he smiles.",
]

# Expected outputs recorded from stanford-corenlp-3.4.1 (so this runs without Java too).
KNOWN = {
    "A man's dog can't swim.": "a man 's dog ca n't swim",
    '"Hello," she said (quietly) & left; ok?': "hello she said -lrb- quietly -rrb- & left ok",
    "Don't gonna lemme O'Neil rock'n'roll": "do n't gon na lem me o'neil rock 'n' roll",
    "a/b c*d ½ £5 €3 50% #1": "a/b c * d 1/2 # 5 $ 3 50 % # 1",
    "Café naïve — résumé [bracket]": "café naïve résumé -lsb- bracket -rsb-",
    "A dog.A cat. Mr. Smith etc. a.m.": "a dog.a cat mr. smith etc. a.m.",
    "": "",
    "!!! ... ,": "!!!",
}


@pytest.mark.parametrize(("text", "expected"), list(KNOWN.items()))
def test_known_outputs(text: str, expected: str) -> None:
    assert ptb_tokenize([text]) == [expected]


def _java_tokenize(texts: list[str]) -> list[str]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    data = {str(i): [{"caption": t}] for i, t in enumerate(texts)}
    with redirect_stderr(io.StringIO()):
        out = PTBTokenizer().tokenize(data)
    return [out[str(i)][0] for i in range(len(texts))]


@pytest.mark.skipif(not java_available(), reason="needs java and pycocoevalcap")
def test_edge_cases_match_the_jar() -> None:
    texts = [t for t in EDGE_CASES if t]  # the jar drops a trailing empty line; see below
    assert ptb_tokenize(texts) == _java_tokenize(texts)


@pytest.mark.skipif(not java_available(), reason="needs java and pycocoevalcap")
def test_flickr8k_references_match_the_jar(flickr_refs) -> None:
    texts = [c for caps in flickr_refs.values() for c in caps]
    assert len(texts) == 750
    assert ptb_tokenize(texts) == _java_tokenize(texts)


@pytest.mark.skipif(not java_available(), reason="needs java and pycocoevalcap")
def test_empty_caption_in_the_middle_matches_the_jar() -> None:
    texts = ["A dog .", "", "a cat"]
    assert ptb_tokenize(texts) == _java_tokenize(texts) == ["a dog", "", "a cat"]


def test_newlines_become_spaces() -> None:
    assert ptb_tokenize(["A dog\nruns."]) == ["a dog runs"]

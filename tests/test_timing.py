"""Word times against utterance boundaries, on made-up words (no model)."""

import json

from woasr.core.records import Word
from woasr.tools.timing import Utterance, boundary_offsets, utterances_beside


def test_each_utterance_gets_the_words_whose_middle_falls_in_its_stretch():
    utterances = [Utterance(1.0, 2.0), Utterance(2.6, 3.5), Utterance(5.0, 6.0)]
    words = [Word(-0.5, -0.1, " noise"),  # more than a second before the first utterance: not counted
             Word(1.05, 1.4, " a"), Word(1.5, 1.9, " b"),
             Word(2.25, 2.5, " c"),  # its middle is past the half-way cut (2.3): the second utterance's
             Word(3.1, 3.6, " d")]
    offsets = boundary_offsets(words, utterances)
    assert [round(s, 3) if s is not None else None for s in offsets.starts] == [0.05, -0.35, None]
    assert [round(e, 3) if e is not None else None for e in offsets.ends] == [-0.1, 0.1, None]
    summary = offsets.summary()
    assert summary["utterances"] == 3 and summary["without_words"] == 1
    assert summary["start_error_ms"] == {"p50": 200.0, "p90": 320.0, "max": 350.0}
    assert offsets.as_json()["end_offsets_ms"] == [-100, 100, None]


def test_the_segments_file_beside_a_clip_is_found(tmp_path):
    clip = tmp_path / "call.wav"
    assert utterances_beside(clip) is None
    clip.with_suffix(".segments.json").write_text(json.dumps(
        {"segments": [{"start_s": 4.0, "end_s": 5.0, "text": "b"}, {"start_s": 1.0, "end_s": 2.0, "text": "a"}]}))
    assert utterances_beside(clip) == [Utterance(1.0, 2.0), Utterance(4.0, 5.0)]

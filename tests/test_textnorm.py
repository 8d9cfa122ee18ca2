"""WER normaliser: the steps docs/eval.md promises."""

from woasr.tools.textnorm import count_errors, normalize_text


def test_case_punctuation_numbers_and_abbreviations():
    assert normalize_text("In 1465, Mr. Smith paid 25% of 3 pounds.") == (
        "in fourteen sixty five mister smith paid twenty five percent of three pounds"
    )


def test_fillers_and_tags_are_dropped_in_english():
    assert normalize_text("Uh, [noise] well-known um words") == "well known words"


def test_other_languages_keep_their_words_and_spell_numbers_in_their_language():
    assert normalize_text("Er hat 3 Hunde.", "de") == "er hat drei hunde"


def test_chinese_japanese_korean_are_scored_per_character():
    assert normalize_text("我們是中国人。", "zh") == "我 们 是 中 国 人"
    assert count_errors("今日は", "今日わ", "ja").errors == 1


def test_librispeech_upper_case_reference_matches_punctuated_hypothesis():
    err = count_errors("HE HOPED THERE WOULD BE STEW", "He hoped there would be stew.")
    assert err.errors == 0 and err.reference_tokens == 6


def test_english_contractions_and_spoken_forms_read_the_same_either_way():
    # unref/: Whisper wrote "I'm", "we'll", "they're" in one pass and "I am", "we will" in another.
    assert normalize_text("I'm sure we'll see they're gonna win, it's OK.") == (
        "i am sure we will see they are going to win its okay"
    )
    assert count_errors("I am not going, I can't", "I'm not going. I can not.").errors == 0
    assert normalize_text("Don’t won't") == "do not will not"  # typographic apostrophe too

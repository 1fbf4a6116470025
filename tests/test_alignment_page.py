"""cap/experiments/alignment_page.py: Figure 8's classes and numbers, on hand-made rows."""

import numpy as np
import pandas as pd
import pytest

from cap.experiments import alignment_page


def _rows():
    """Flagged classes per seed: "a" planted (gains 30 and 50, informative then vague), "b" planted
    (loses 10 twice, sibling), "c" not planted (gains 4, informative)."""
    rows = [("a", 1, True, "informative", 20, 50), ("a", 2, True, "vague", 30, 80), ("a", 3, True, "informative", 20, 60),
            ("b", 1, True, "sibling", 40, 30), ("b", 2, True, "sibling", 40, 30), ("c", 1, False, "informative", 10, 14)]
    frame = pd.DataFrame([{"dataset": "dtd", "class": c, "seed": s, "planted": p, "description": k, "without": w,
                           "with": x} for c, s, p, k, w, x in rows])
    return frame.assign(gain=frame["with"] - frame["without"])


def test_per_class_means_and_order():
    classes = alignment_page.per_class(_rows())
    # planted first, smallest gain first: b (-10), a ((30 + 50 + 40) / 3 = 40), then c (+4)
    assert list(classes["class"]) == ["b", "a", "c"]
    a = classes.set_index("class").loc["a"]
    assert (a["seeds"], a["without"], a["with_"], a["gain"]) == (3, pytest.approx(70 / 3), pytest.approx(190 / 3),
                                                                 pytest.approx(40))
    assert a["description"] == "informative"  # chosen twice of three
    assert alignment_page.per_class(_rows().iloc[:0]).empty


def test_class_table_shows_the_description_kind_only_when_known():
    classes = alignment_page.per_class(_rows())
    shown = alignment_page.class_table(classes, str.upper)
    assert list(shown["dataset"]) == ["DTD"] * 3 and shown["chosen description (kind)"].iloc[0] == "sibling"
    unknown = alignment_page.class_table(classes.assign(description=None), str.upper)
    assert "chosen description (kind)" not in unknown


def test_gain_texts():
    judged = {"effect": 15.0, "units": 2, "gain": 1, "loss": 1, "over_60": 0, "other_gain": np.nan, "other_classes": 0}
    texts = alignment_page.gain_texts(judged)
    assert texts == {"f8_planted_gain": "+15.0", "f8_planted_n": "2", "f8_planted_agree": "1", "f8_planted_disagree": "1",
                     "f8_over_60": "0", "f8_other_gain": "no such class", "f8_other_n": "0"}


def test_description_kind_shares_over_planted_cases():
    texts = alignment_page.description_kind_texts(_rows())
    # five planted cases: informative 2 (gains 30, 40: mean 35), vague 1 (50), sibling 2 (-10)
    assert (texts["f8_kind_informative_share"], texts["f8_kind_informative_gain"]) == ("40", "+35.0")
    assert (texts["f8_kind_vague_share"], texts["f8_kind_vague_gain"]) == ("20", "+50.0")
    assert (texts["f8_kind_sibling_share"], texts["f8_kind_sibling_gain"]) == ("40", "\u221210.0")
    none = alignment_page.description_kind_texts(_rows().iloc[:0])
    assert none["f8_kind_vague_share"] == "0" and none["f8_kind_vague_gain"] == "never chosen"


def test_first_candidate_gain_without_runs():
    runs = pd.DataFrame(columns=["dataset", "variant", "seed", "state", "record"])
    assert alignment_page.first_candidate_gain_text(runs) == "not run yet"


def test_first_candidate_gain_of_the_planted_classes():
    # the code_lists run aligns classes 0 (planted: 20 -> 70) and 1 (not planted: 50 -> 40); the
    # official run is left out
    def record(without, with_):
        return {"results": {"classnames": ["x", "y"], "ground_truth": {"mismatched_indices": [0]},
                            "setup": {"zero_shot_dpl": {"per_class_accuracy": {"0": without[0], "1": without[1]}},
                                      "concept_alignment": {"described": [0, 1], "description_index": {"0": 0, "1": 0},
                                                            "dpl": {"per_class_accuracy": {"0": with_[0], "1": with_[1]}}}}}}

    runs = pd.DataFrame([{"dataset": "dtd", "variant": "code_lists", "seed": 1, "state": "done",
                          "record": record((20, 50), (70, 40))},
                         {"dataset": "dtd", "variant": "official", "seed": 1, "state": "done",
                          "record": record((20, 50), (20, 50))}])
    assert alignment_page.first_candidate_gain_text(runs) == "+50.0"

import pytest

from cap.data.registry import dataset_names, get_dataset
from cap.experiments.references import reference_number
from cap.errors import CapError, UnknownNameError

COUNTS = {"flowers102": 102, "resisc45": 45, "dtd": 47, "eurosat": 10, "cub": 200, "fgvc_aircraft": 100}
MISMATCHED = {"flowers102": 7, "resisc45": 2, "dtd": 4, "eurosat": 0, "cub": 5, "fgvc_aircraft": 2}


def test_six_datasets_with_their_class_counts():
    assert dataset_names() == list(COUNTS)
    for name, n in COUNTS.items():
        info = get_dataset(name)
        assert info.n_classes == n
        assert len(set(info.classnames)) == n, "duplicate class names"
        assert len(info.class_indices(info.official_mismatched)) == MISMATCHED[name]


def test_eurosat_descriptive_names_and_cub_cleaning():
    assert get_dataset("eurosat").classnames == (
        "annual crop land", "forest", "brushland or shrubland", "highway or road",
        "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
        "residential buildings or homes or apartments", "river", "lake or sea",
    )
    cub = get_dataset("cub").classnames
    assert cub[0] == "black footed albatross"
    assert all(name == name.lower() and "_" not in name and not name[0].isdigit() for name in cub)


def test_aliases_resolve():
    assert get_dataset("RESICS45").name == "resisc45"
    assert get_dataset("FGVC-Aircraft").name == "fgvc_aircraft"
    assert get_dataset("Flowers102").name == "flowers102"


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(UnknownNameError) as info:
        get_dataset("imagenet")
    message = str(info.value)
    assert "'imagenet'" in message and all(name in message for name in COUNTS)
    with pytest.raises(CapError, match="not in the class list"):
        get_dataset("dtd").class_indices(["no such texture"])


def test_zero_shot_reference_numbers_for_all_six():
    expected = {"flowers102": 63.67, "resisc45": 54.48, "dtd": 43.2, "eurosat": 32.88, "cub": 51.82, "fgvc_aircraft": 17.58}
    for name, value in expected.items():
        ref = reference_number("zero_shot", "ul", name)
        assert ref.value == value and ref.verified and ref.cite
    assert reference_number("zero_shot", "trzsl", "cub") is None  # not published


def test_matches_types():
    from cap.errors import matches_types

    assert matches_types(3, ["int"]) and matches_types(3, ["float"]) and matches_types(None, ["int", "None"])
    assert matches_types(True, ["int"]) is False and matches_types("3", ["int"]) is False
    assert matches_types(3, ["Path"]) is None  # not a type it can check

"""cap/experiments/imbalance_page.py: Figures 1 and 2's table and sentence, on hand-made counts."""

import numpy as np

from cap.experiments import imbalance_page

# accuracies 5, 50, 95; predicted 0, 10, 20 of 10 each: class 0 is under-predicted, 1 of 3 classes
DTD = (np.array([5.0, 50.0, 95.0]), np.array([0, 10, 20]), np.array([10, 10, 10]))
# every class predicted as often as it occurs: none under-predicted
CUB = (np.array([80.0, 90.0]), np.array([5, 5]), np.array([5, 5]))


def test_under_predicted_share_is_the_mean_over_datasets():
    assert imbalance_page.under_predicted_text({"dtd": DTD, "cub": CUB}) == "16.7 %"  # (33.3 + 0) / 2
    assert imbalance_page.under_predicted_text({}) == "no simulated class yet (no results)"


def test_balance_table_names_its_columns_and_defines_them():
    frame = imbalance_page.balance_frame({"dtd": DTD}, str.upper)
    assert list(frame.columns) == ["dataset", "classes below 10 % accuracy", "classes", "under-predicted share (%)",
                                   "most / least predicted", "normalised entropy"]
    assert frame.iloc[0]["classes below 10 % accuracy"] == 1
    html = imbalance_page.balance_html({"dtd": DTD, "cub": CUB}, str.upper)
    assert "<td>33.3</td>" in html and "<td>1.00</td>" in html  # cub: entropy 1 with two decimals
    assert html.endswith('<p class="table-note">' + imbalance_page.BALANCE_NOTE + "</p>")

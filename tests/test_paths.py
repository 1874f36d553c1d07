"""Checkpoint names stay within file-name limits for any population, and keep the names of
existing checkpoints (reengage/paths.py)."""

from pathlib import Path

import pytest

from reengage.paths import LONGEST_SEED_LABEL, checkpoint_path, seed_label, seeds_text


def test_short_populations_keep_their_plain_names():
    # Existing checkpoints were written under these names; a resume must find them.
    assert checkpoint_path(Path("out"), [0, 1, 5]) == Path("out/.checkpoints/seeds-0_1_5.pt")
    assert seed_label(list(range(20))) == "_".join(map(str, range(20)))


@pytest.mark.parametrize("seeds", [
    list(range(1000)),
    list(range(0, 5000, 2)),  # no consecutive runs at all
    list(range(100, 1100)) + list(range(5000, 5100)),
    [*range(300), 400, *range(500, 900)],
])
def test_large_populations_get_bounded_names_that_can_be_written(tmp_path, seeds):
    path = checkpoint_path(tmp_path, seeds)
    assert len(path.name) <= LONGEST_SEED_LABEL + len("seeds-.pt")
    path.parent.mkdir()
    path.write_bytes(b"x")  # the file system takes the name
    assert path.read_bytes() == b"x"


def test_long_consecutive_populations_read_as_cli_ranges():
    assert seed_label(list(range(1000))) == "0-999"
    assert seed_label(list(range(100, 1100)) + list(range(5000, 5100))) == "100-1099_5000-5099"


def test_different_populations_never_share_a_name():
    populations = [
        list(range(1000)), list(range(1001)), list(range(1, 1001)),
        list(range(0, 5000, 2)), list(range(0, 5002, 2)), list(range(1, 5000, 2)),
        [*range(300), 400, *range(500, 900)], [*range(300), 401, *range(500, 900)],
        list(range(30)), [0, 1, 2],
    ]
    labels = [seed_label(p) for p in populations]
    assert len(set(labels)) == len(populations)


def test_log_lines_name_large_populations_by_ranges():
    assert seeds_text([3]) == "seed 3"
    assert seeds_text([0, 1]) == "seeds 0,1"
    assert seeds_text(list(range(1000))) == "seeds 0-999"
    assert seeds_text([0, 1, 2, 5, 7, 8, 9, 10]) == "seeds 0-2,5,7-10"

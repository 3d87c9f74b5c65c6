"""The architecture and objective variants (docs/method.md) learn the U-maze at the budget and thresholds
of tests/test_learning.py."""

import pytest
from helpers import learn_point_u_maze


@pytest.mark.slow
@pytest.mark.long
def test_hyperspherical_normalisation_learns_point_u_maze_on_cpu(tmp_path):
    """SimbaV2's hyperspherical trunk (docs/method.md#hyperspherical-normalisation) at depth 4 learns the
    U-maze under the LayerNorm test's budget and threshold."""
    rows, seconds = learn_point_u_maze(tmp_path / "hyperspherical", norm="hyperspherical")
    success_any = [r["eval/episode_success_any"] for r in rows]
    print(f"point_u_maze, depth 4, hyperspherical: success-any per epoch {success_any}, {seconds:.0f} s")
    assert success_any[0] < 0.5 and max(success_any) >= 0.8


@pytest.mark.slow
@pytest.mark.long
def test_crl_with_the_mrn_quasimetric_learns_point_u_maze_on_cpu(tmp_path):
    """CMD-1's pairing (docs/method.md#critic): backward InfoNCE with the MRN energy, at the budget and
    thresholds of test_crl_learns_point_u_maze_on_cpu."""
    rows, seconds = learn_point_u_maze(tmp_path / "mrn", energy="mrn", contrastive_loss="backward_infonce")
    success_any = [r["eval/episode_success_any"] for r in rows]
    print(f"point_u_maze, depth 4, mrn + backward InfoNCE: success-any per epoch {success_any}, {seconds:.0f} s")
    assert success_any[0] < 0.5 and max(success_any) >= 0.8

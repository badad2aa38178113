"""Replay fidelity against the published demonstrations (the levels measured with
`python -m demos.pusht_replay --dataset ../shared/data/pusht.zip`, see docs/pusht.md, "Fidelity")."""

from demos.pusht_replay import format_summary, replay_dataset, summarize


def test_every_demonstration_replays_to_its_recorded_states(pusht_zip):
    results = replay_dataset(str(pusht_zip), images=False, progress=False)
    s = summarize(results)
    assert s["episodes"] == 206 and s["steps"] == 25650 - 206
    # Measured: medians ~1e-5 px (float32 rounding of the recorded states), worst step 0.23 px / 0.14 deg.
    assert s["agent_error_px"]["max"] < 1e-3
    assert s["block_error_px"]["p95"] < 1e-3 and s["block_error_px"]["max"] < 0.5
    assert s["block_angle_error_deg"]["p95"] < 1e-3 and s["block_angle_error_deg"]["max"] < 0.3
    assert s["coverage_within_tolerance"] == 206


def test_rendered_frames_match_the_recorded_images(pusht_zip):
    s = summarize(replay_dataset(str(pusht_zip), episodes=12, images=True, progress=False))
    # Measured over all 206 episodes: median 0.078, p95 0.131, max 0.208 (0..255 scale).
    assert s["image_mae"]["median"] < 0.12 and s["image_mae"]["max"] < 0.3, format_summary(s)

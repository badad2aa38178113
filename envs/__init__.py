"""Simulation environments with the gymnasium API, and the code that evaluates policies in them.

- envs/pusht: Push-T, a pymunk simulation of Diffusion Policy's Push-T task (gymnasium id "PushT-v0").
- envs/robomimic: the robomimic tasks (Lift, Can, Square, Transport, ToolHang) through robosuite and
  robomimic's env utilities (gymnasium id "Robomimic-v0").
- envs/tasks.py: task definitions: an environment plus the observation keys a policy sees, read the same
  way from a replay buffer and from the environment (`get_task("pusht_keypoints")`).
- envs/rollout.py: the one closed-loop rollout loop used by eval.py and train.py.
- envs/video.py: writing rollout videos (mp4).
"""

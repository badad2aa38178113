"""Simulation environments with the gymnasium API: Push-T (pymunk) and, later, the robomimic tasks."""

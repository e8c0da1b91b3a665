"""ntm-experiments' Hydra launcher: ``hydra/launcher=stacked`` (stacked_launcher.py)."""

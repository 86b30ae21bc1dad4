"""search package: search spaces, the trial objective (trainer), studies, workers, SLURM."""

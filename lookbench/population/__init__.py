"""Population training: many trials of one study trained together as one vectorised model."""

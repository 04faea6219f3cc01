"""trainer: retrains each task's detector from its labels, by priority, and registers versions."""

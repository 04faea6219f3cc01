"""labeler-assist: takes human labels, counts toward retraining, pre-annotates with the task's model."""

"""labeler-assist: takes labels, counts toward retraining, pre-annotates with the task model."""

"""labeler-assist: takes labels, counts toward retraining, pre-annotates with the task model."""

from labelloop.identity import ServiceIdentity

IDENTITY = ServiceIdentity("labeler-assist")

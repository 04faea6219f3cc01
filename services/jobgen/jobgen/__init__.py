"""jobgen: cuts a task whose data is ready into annotation jobs and announces them."""

from labelloop.identity import ServiceIdentity

IDENTITY = ServiceIdentity("jobgen")

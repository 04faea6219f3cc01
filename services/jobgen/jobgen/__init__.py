"""jobgen: cuts a task whose data is ready into annotation jobs and announces them."""
